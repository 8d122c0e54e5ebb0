import CBLAS

/// C (m×n, row-major) = α · Aᵀ·B + β·C, with A stored k×m and B stored k×n, row-major: the
/// product of two planar feature maps (channels × positions) over their channels. OpenBLAS runs it
/// on all cores; hand-written SIMD reached a fifth of its speed here (CONVENTIONS.md).
public func multiplyTransposedA(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil,
                                alpha: Float = 1, beta: Float = 0) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                alpha, a, Int32(lda ?? m), b, Int32(ldb ?? n), beta, c, Int32(n))
}
