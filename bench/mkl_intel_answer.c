/* For bench.py's reference run with the tools' process settings: LD_PRELOADed
 * into the reference's Python process, this answers MKL's vendor question
 * the way src/mkl_kernels.rs answers it on a CPU with AVX-512 (yes), so MKL
 * inside torch runs its AVX-512 sgemm kernels there too. */
int mkl_serv_intel_cpu_true(void) { return 1; }
