namespace RawGan.Engine.Backends.Reference;

// Optimizer updates and the NaN watch, element by element:
//   adam_update (TensorFlow's form, as in the official ProGAN), step t counting from 1:
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//     lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)   (the bias corrections folded into the step size)
//     p -= lr_t m / (sqrt(v) + eps)           (eps added to sqrt(v), not to the corrected sqrt(v))
//   adam_step: t += 1 (t lives on the device, an int in a float's storage);
//   ema_update: ema = p + beta (ema - p);
//   adam_step, adam_update and ema_update do nothing when their skip count is given and not zero;
//   count_nonfinite: how many x[i] are NaN, +Inf or -Inf.
// The arithmetic is in double; m, v and p are each rounded once when stored.
public sealed unsafe partial class ReferenceBackend
{
    public void AdamStep(DeviceBuffer step, DeviceBuffer skip)
    {
        if (step.Length < 1) throw new ArgumentException("AdamStep: the step count needs one float of storage");
        if (!Skipped(skip)) *(int*)P(step) += 1;
    }

    /// <summary>Whether a skip count (a 64-bit non-finite count) is given and not zero.</summary>
    private static bool Skipped(DeviceBuffer skip) => !skip.IsNull && *(long*)P(skip) != 0;

    public void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, DeviceBuffer stepCount, DeviceBuffer skip,
        DeviceBuffer nonFiniteCount = default)
    {
        if (Skipped(skip)) return;
        int step = *(int*)P(stepCount);
        float* pp = P(p), pg = P(g), pm = P(m), pv = P(v);
        double lrT = lr * Math.Sqrt(1 - Math.Pow(beta2, step)) / (1 - Math.Pow(beta1, step));
        for (long i = 0; i < n; i++)
        {
            double gi = pg[i];
            double mi = beta1 * (double)pm[i] + (1 - (double)beta1) * gi;
            double vi = beta2 * (double)pv[i] + (1 - (double)beta2) * gi * gi;
            pm[i] = (float)mi;
            pv[i] = (float)vi;
            pp[i] = (float)(pp[i] - lrT * mi / (Math.Sqrt(vi) + eps));
        }
        // The counts as a separate pass over what was written: the definition, not a fusion.
        if (!nonFiniteCount.IsNull)
            foreach (var written in new[] { p, m, v }) CountNonFinite(written, n, nonFiniteCount);
    }

    public void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta, DeviceBuffer skip, DeviceBuffer nonFiniteCount = default)
    {
        if (Skipped(skip)) return;
        float* pe = P(ema), pp = P(p);
        for (long i = 0; i < n; i++) pe[i] = (float)(pp[i] + (double)beta * ((double)pe[i] - pp[i]));
        if (!nonFiniteCount.IsNull) CountNonFinite(ema, n, nonFiniteCount);
    }

    public void CountNonFinite(DeviceBuffer x, long n, DeviceBuffer count)
    {
        if (count.Length < 2) throw new ArgumentException($"CountNonFinite: the counter holds {count.Length} floats, 2 needed");
        float* px = P(x);
        long found = 0;
        for (long i = 0; i < n; i++)
            if (float.IsNaN(px[i]) || float.IsInfinity(px[i])) found++;
        *(long*)P(count) += found;
    }
}
