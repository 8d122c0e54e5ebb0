// OpenBLAS's CBLAS interface (Debian: libopenblas-dev), for matrix products in Tensor.
#ifndef LOCKSTEP_CBLAS_SHIM_H
#define LOCKSTEP_CBLAS_SHIM_H
#include <cblas.h>
#endif
