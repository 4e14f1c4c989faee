namespace RawGan.Engine.Backends.Reference;

// Optimizer updates and the NaN watch, element by element:
//   adam_update (TensorFlow's form, as in the official ProGAN), step t counting from 1:
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//     lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)   (the bias corrections folded into the step size)
//     p -= lr_t m / (sqrt(v) + eps)           (eps added to sqrt(v), not to the corrected sqrt(v))
//   ema_update: ema = p + beta (ema - p);
//   count_nonfinite: how many x[i] are NaN, +Inf or -Inf.
// The arithmetic is in double; m, v and p are each rounded once when stored.
public sealed unsafe partial class ReferenceBackend
{
    public void AdamUpdate(DeviceBuffer p, DeviceBuffer g, DeviceBuffer m, DeviceBuffer v, long n, float lr, float beta1, float beta2, float eps, int step)
    {
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
    }

    public void EmaUpdate(DeviceBuffer ema, DeviceBuffer p, long n, float beta)
    {
        float* pe = P(ema), pp = P(p);
        for (long i = 0; i < n; i++) pe[i] = (float)(pp[i] + (double)beta * ((double)pe[i] - pp[i]));
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
