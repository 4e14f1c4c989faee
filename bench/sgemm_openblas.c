/* sgemm_openblas.c: OpenBLAS's single-precision GEMM in GFLOP/s on square row-major matrices
 * (512, 1024, 2048), printed in the line format of RawGan's `--gemm` mode, so the two can be set
 * side by side (bench/gemm_compare.sh runs both).
 *
 * OpenBLAS is opened at run time (dlopen), so no -dev package is needed: Debian's
 * libopenblas0-pthread is enough. The library reports which kernel it chose for this CPU
 * (openblas_get_corename): with OPENBLAS_CORETYPE=Haswell in the environment that is the AVX2
 * kernel, with the variable unset the library picks by itself (SkylakeX / Cooperlake: AVX-512).
 *
 *   gcc -O2 -o sgemm_openblas bench/sgemm_openblas.c -ldl
 *   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./sgemm_openblas [threads] [library]
 *
 * Each size: one untimed call, then calls until a second has passed (at least 3); the best call is
 * reported (the least disturbed by other processes), the median beside it. A few entries of C are
 * checked against double-precision dot products first.
 */
#define _POSIX_C_SOURCE 199309L
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { RowMajor = 101, NoTrans = 111 };
typedef void (*sgemm_fn)(int order, int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*set_threads_fn)(int);
typedef char *(*string_fn)(void);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A deterministic N(0, 1)-like fill (sum of uniforms), so runs are repeatable. */
static void fill(float *p, long n, unsigned long long seed)
{
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < 4; j++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            s += (double)(seed >> 11) / 9007199254740992.0;
        }
        p[i] = (float)((s - 2.0) * 1.7320508);
    }
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const char *candidates[] = {argc > 2 ? argv[2] : "libopenblas.so.0",
                                "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", NULL};
    void *lib = NULL;
    const char *used = NULL;
    for (int i = 0; candidates[i] && !lib; i++)
        if ((lib = dlopen(candidates[i], RTLD_NOW))) used = candidates[i];
    if (!lib) {
        fprintf(stderr, "OpenBLAS not found (Debian: apt-get install libopenblas0-pthread): %s\n", dlerror());
        return 1;
    }
    sgemm_fn sgemm = (sgemm_fn)dlsym(lib, "cblas_sgemm");
    set_threads_fn set_threads = (set_threads_fn)dlsym(lib, "openblas_set_num_threads");
    string_fn config = (string_fn)dlsym(lib, "openblas_get_config");
    string_fn corename = (string_fn)dlsym(lib, "openblas_get_corename");
    if (!sgemm || !set_threads || !config || !corename) {
        fprintf(stderr, "%s is not OpenBLAS (cblas_sgemm / openblas_* missing)\n", used);
        return 1;
    }
    set_threads(threads);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("# %s: %s; core %s; OPENBLAS_CORETYPE=%s\n", used, config(), corename(), coretype ? coretype : "(unset)");

    const int sizes[] = {512, 1024, 2048};
    for (int si = 0; si < 3; si++) {
        int n = sizes[si];
        long nn = (long)n * n;
        float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
        fill(a, nn, 1);
        fill(b, nn, 2);
        sgemm(RowMajor, NoTrans, NoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        unsigned long long r = 5;
        for (int t = 0; t < 16; t++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            int i = (int)((r >> 33) % n), j = (int)((r >> 13) % n);
            double sum = 0, scale = 0;
            for (int p = 0; p < n; p++) {
                sum += (double)a[(long)i * n + p] * b[(long)p * n + j];
                scale += fabs((double)a[(long)i * n + p] * b[(long)p * n + j]);
            }
            if (fabs(c[(long)i * n + j] - sum) > 1e-5 * scale) {
                fprintf(stderr, "n=%d: C[%d, %d] = %g, expected %g\n", n, i, j, c[(long)i * n + j], sum);
                return 1;
            }
        }
        double times[4096];
        int count = 0;
        double start = now();
        while ((count < 3 || now() - start < 1.0) && count < 4096) {
            double t0 = now();
            sgemm(RowMajor, NoTrans, NoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            times[count++] = now() - t0;
        }
        qsort(times, count, sizeof times[0], compare);
        double flops = 2.0 * n * n * n;
        printf("openblas-sgemm n=%d threads=%d gflops=%.1f median_gflops=%.1f core=%s\n", n, threads, flops / times[0] / 1e9,
               flops / times[count / 2] / 1e9, corename());
        free(a);
        free(b);
        free(c);
    }
    return 0;
}
