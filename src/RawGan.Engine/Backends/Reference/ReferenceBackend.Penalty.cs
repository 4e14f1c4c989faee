namespace RawGan.Engine.Backends.Reference;

// The WGAN-GP gradient penalty (Gulrajani et al. 2017), per sample s of `inner` values g[s, :]:
//   forward:  norm[s] = ||g[s]||_2 = sqrt(sum_i g[s, i]^2),  penalty[s] = (norm[s] - target)^2;
//   backward: gg[s, i] = gpenalty[s] 2 (norm[s] - target) g[s, i] / norm[s],
// and 0 where norm[s] is not positive (the subgradient at g = 0; like CpuBackend, a NaN norm
// also gives 0).
public sealed unsafe partial class ReferenceBackend
{
    public void GradientPenaltyForward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer penalty, int samples, int inner, float target)
    {
        float* pg = P(g), pn = P(norm), pp = P(penalty);
        for (long s = 0; s < samples; s++)
        {
            double sumSquares = 0;
            for (long i = 0; i < inner; i++) sumSquares += (double)pg[s * inner + i] * pg[s * inner + i];
            double nrm = Math.Sqrt(sumSquares);
            pn[s] = (float)nrm;
            pp[s] = (float)((nrm - target) * (nrm - target));
        }
    }

    public void GradientPenaltyBackward(DeviceBuffer g, DeviceBuffer norm, DeviceBuffer gpenalty, DeviceBuffer gg, int samples, int inner, float target)
    {
        float* pg = P(g), pn = P(norm), pgp = P(gpenalty), po = P(gg);
        for (long s = 0; s < samples; s++)
        {
            double nrm = pn[s];
            for (long i = 0; i < inner; i++)
            {
                long j = s * inner + i;
                po[j] = nrm > 0 ? (float)(pgp[s] * 2 * (nrm - target) * pg[j] / nrm) : 0f;
            }
        }
    }
}
