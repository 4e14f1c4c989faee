#!/usr/bin/env python3
"""One ProGAN training iteration in PyTorch, timed: the yardstick for RawGan's `rawgan bench`.

The network, loss and optimizer follow the same facts RawGan's ProGAN is built from
(shared/PROGAN_FACTS.md), layer for layer as src/RawGan.ProGan/Model builds them, so that the
two programs do the same arithmetic:

  G: z -> pixel norm -> dense to nf(1) x 4 x 4 (+ bias per channel, lrelu, pixel norm)
       -> conv3x3 (lrelu, pixel norm); per later block: nearest 2x upsample -> conv3x3 -> lrelu
       -> pixel norm -> conv3x3 -> lrelu -> pixel norm; toRGB 1x1, linear. No tanh.
  D: fromRGB 1x1 + lrelu; per block above 4x4: conv3x3 (nf(r-1)) -> lrelu -> conv3x3 (nf(r-2))
       -> lrelu -> 2x2 average pool; head: minibatch stddev (strided groups of min(4, N)) ->
       conv3x3 -> lrelu -> dense (nf(1) 16 -> nf(0)) -> lrelu -> dense (-> 1), linear.
  Equalized learning rate: weights N(0, 1), multiplied by gain / sqrt(fan_in) at every use;
  gain sqrt(2), except toRGB and D's last dense (1) and G's first dense (sqrt(2) / 4).
  nf(s) = min(fmap_base / 2^s, fmap_max). Every resolution's toRGB / fromRGB exists (as in
  RawGan, so the parameter counts match), only the full-resolution ones are used (alpha = 1).

One iteration, as RawGan's bench command runs it:
  D step: fakes = G(z) without gradient; D(reals), D(fakes), D(x_hat) with
          x_hat = real + t (fake - real), t ~ U[0, 1) per sample;
          loss = mean(D(fake) - D(real) + 10 (||grad_x_hat D(x_hat)||_2 - 1)^2 + 0.001 D(real)^2),
          the penalty's gradient taken with create_graph; Adam(lr 0.001, betas (0, 0.99), eps 1e-8).
  G step: loss = -mean(D(G(z'))); gradients for G only (D's weights need none); Adam.
  EMA:    Gs <- G + 0.999 (Gs - G).
  Each update is skipped if the loss or a gradient is not finite (the official behaviour), so
  both programs pay for that check.

The last line printed is `ms_per_iter=<median> images_per_s=<value>`, as `rawgan bench` prints.
Debian's python3-torch (1.13, CPU) is the reference: run with /usr/bin/python3.
"""

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8
SQRT2 = math.sqrt(2.0)


def nf(stage, fmap_base, fmap_max):
    """Channels of the block at resolution 2^(stage + 1)."""
    return min(fmap_base >> stage, fmap_max)


class EqualizedConv2d(nn.Module):
    """Stride 1, 'same' padding; weight [out, in, k, k] scaled by gain / sqrt(in k k) at every use."""

    def __init__(self, cin, cout, kernel, gain):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedDense(nn.Module):
    """Weight [out, in] scaled by gain / sqrt(in); the bias may be sized for use after a reshape."""

    def __init__(self, fin, fout, gain, bias_features=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fout, fin))
        self.bias = nn.Parameter(torch.zeros(bias_features or fout))
        self.scale = gain / math.sqrt(fin)

    def forward_no_bias(self, x):
        return F.linear(x, self.weight * self.scale)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x):
    """x / sqrt(mean over channels of x^2 + 1e-8), per pixel of each sample (dim 1 is channels)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + EPS)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def minibatch_stddev(x, group_size=4):
    """Appends one channel: per group, the population std over its members of every feature
    (+ 1e-8 inside the root), averaged over the features. G = min(group_size, N); sample s is in
    group s mod (N / G): the batch reshapes to [G, M, ...], so groups are strided."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g != 0:
        raise ValueError(f"batch {n} is not divisible by the minibatch stddev group size {g}")
    m = n // g
    y = x.reshape(g, m, c, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = torch.sqrt(y.pow(2).mean(dim=0) + EPS)          # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3))                            # [M]
    y = y.reshape(1, m, 1, 1, 1).expand(g, m, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)


class Generator(nn.Module):
    def __init__(self, resolution, channels, latent, fmap_base, fmap_max):
        super().__init__()
        self.max_level = int(math.log2(resolution))
        f = lambda s: nf(s, fmap_base, fmap_max)
        self.nf1 = f(1)
        self.latent_dense = EqualizedDense(latent, self.nf1 * 16, SQRT2 / 4, bias_features=self.nf1)
        self.conv4 = EqualizedConv2d(self.nf1, self.nf1, 3, SQRT2)
        self.to_rgb = nn.ModuleDict({"4": EqualizedConv2d(self.nf1, channels, 1, 1.0)})
        self.blocks = nn.ModuleDict()
        for r in range(3, self.max_level + 1):
            cin, cout = f(r - 2), f(r - 1)
            self.blocks[str(2 ** r)] = nn.ModuleList([EqualizedConv2d(cin, cout, 3, SQRT2), EqualizedConv2d(cout, cout, 3, SQRT2)])
            self.to_rgb[str(2 ** r)] = EqualizedConv2d(cout, channels, 1, 1.0)

    def forward(self, z):
        n = z.shape[0]
        x = self.latent_dense.forward_no_bias(pixel_norm(z)).reshape(n, self.nf1, 4, 4)
        x = pixel_norm(lrelu(x + self.latent_dense.bias.reshape(1, self.nf1, 1, 1)))
        x = pixel_norm(lrelu(self.conv4(x)))
        for r in range(3, self.max_level + 1):
            conv0, conv1 = self.blocks[str(2 ** r)]
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = pixel_norm(lrelu(conv0(x)))
            x = pixel_norm(lrelu(conv1(x)))
        return self.to_rgb[str(2 ** self.max_level)](x)


class Discriminator(nn.Module):
    def __init__(self, resolution, channels, fmap_base, fmap_max, group_size=4):
        super().__init__()
        self.max_level = int(math.log2(resolution))
        self.group_size = group_size
        f = lambda s: nf(s, fmap_base, fmap_max)
        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for r in range(self.max_level, 2, -1):
            self.from_rgb[str(2 ** r)] = EqualizedConv2d(channels, f(r - 1), 1, SQRT2)
            self.blocks[str(2 ** r)] = nn.ModuleList([EqualizedConv2d(f(r - 1), f(r - 1), 3, SQRT2), EqualizedConv2d(f(r - 1), f(r - 2), 3, SQRT2)])
        nf1 = f(1)
        self.from_rgb["4"] = EqualizedConv2d(channels, nf1, 1, SQRT2)
        self.head_conv = EqualizedConv2d(nf1 + 1, nf1, 3, SQRT2)
        self.head_dense = EqualizedDense(nf1 * 16, f(0), SQRT2)
        self.out = EqualizedDense(f(0), 1, 1.0)

    def forward(self, images):
        x = lrelu(self.from_rgb[str(2 ** self.max_level)](images))
        for r in range(self.max_level, 2, -1):
            conv0, conv1 = self.blocks[str(2 ** r)]
            x = lrelu(conv0(x))
            x = F.avg_pool2d(lrelu(conv1(x)), 2)
        x = minibatch_stddev(x, self.group_size)
        x = lrelu(self.head_conv(x))
        x = lrelu(self.head_dense(x.reshape(x.shape[0], -1)))
        return self.out(x)


def all_finite(loss, module):
    """The loss and every gradient of the module are finite (what RawGan checks before each update)."""
    if not math.isfinite(loss.item()):
        return False
    return all(bool(torch.isfinite(p.grad).all()) for p in module.parameters() if p.grad is not None)


def count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--latent", type=int, default=128)
    p.add_argument("--fmap-base", type=int, default=2048)
    p.add_argument("--fmap-max", type=int, default=128)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="iterations not timed")
    p.add_argument("--profile", action="store_true", help="also profile one more iteration and print the top ops by self CPU time")
    a = p.parse_args()
    if a.resolution < 4 or a.resolution & (a.resolution - 1):
        sys.exit("--resolution must be a power of two, at least 4")
    if a.batch < 1 or a.batch % min(4, a.batch):
        sys.exit("--batch must be a positive multiple of 4 (or smaller than 4)")
    if a.iterations < 1 or a.warmup < 0:
        sys.exit("--iterations must be at least 1 and --warmup at least 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    g = Generator(a.resolution, a.channels, a.latent, a.fmap_base, a.fmap_max)
    d = Discriminator(a.resolution, a.channels, a.fmap_base, a.fmap_max)
    gs = Generator(a.resolution, a.channels, a.latent, a.fmap_base, a.fmap_max)
    gs.load_state_dict(g.state_dict())
    gs.requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=0.001, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=0.001, betas=(0.0, 0.99), eps=1e-8)
    n = a.batch
    reals = torch.rand(n, a.channels, a.resolution, a.resolution) * 2 - 1
    g_params, gs_params = list(g.parameters()), list(gs.parameters())

    print(f"pytorch {torch.__version__}: threads {torch.get_num_threads()}; {a.resolution}x{a.resolution}, batch {n}, "
          f"latent {a.latent}, fmap-base {a.fmap_base}, fmap-max {a.fmap_max}; G {count(g):,}, D {count(d):,} parameters; "
          f"mkldnn {torch.backends.mkldnn.is_available()}")

    def iteration():
        # Critic step (WGAN-GP with ProGAN's drift term).
        z = torch.randn(n, a.latent)
        with torch.no_grad():
            fakes = g(z)
        real = d(reals).reshape(n)
        fake = d(fakes).reshape(n)
        t = torch.rand(n, 1, 1, 1)
        x_hat = (reals + t * (fakes - reals)).requires_grad_(True)
        (grad,) = torch.autograd.grad(d(x_hat).sum(), x_hat, create_graph=True)
        penalty = (grad.reshape(n, -1).norm(dim=1) - 1.0).pow(2)
        loss_d = (fake - real + 10.0 * penalty + 0.001 * real.pow(2)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if not all_finite(loss_d, d):      # the official trainer skips a step with non-finite gradients
            return False
        opt_d.step()
        # Generator step: gradients flow through D to G, but D's weights need none.
        d.requires_grad_(False)
        loss_g = -d(g(torch.randn(n, a.latent))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        d.requires_grad_(True)
        if not all_finite(loss_g, g):
            return False
        opt_g.step()
        # Generator EMA: Gs <- G + 0.999 (Gs - G) = lerp(Gs, G, 0.001).
        with torch.no_grad():
            for pe, pg in zip(gs_params, g_params):
                pe.lerp_(pg, 1.0 - 0.999)
        return True

    for _ in range(a.warmup):
        iteration()
    times = []
    for i in range(a.iterations):
        start = time.perf_counter()
        finite = iteration()
        times.append((time.perf_counter() - start) * 1000.0)
        print(f"iteration {i + 1}: {times[-1]:.1f} ms{'' if finite else ' (an update was skipped: non-finite)'}")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            iteration()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    median = statistics.median(times)
    print(f"ms_per_iter={median:.1f} images_per_s={n * 1000.0 / median:.2f}")


if __name__ == "__main__":
    main()
