import CBLAS

/// A row-major matrix of floats, for matrix products through BLAS.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    public var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(rows > 0 && columns > 0 && values.count == rows * columns, "matrix values do not match its shape")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public init(rows: Int, columns: Int) {
        self.init(rows: rows, columns: columns, values: [Float](repeating: 0, count: rows * columns))
    }

    public subscript(row: Int, column: Int) -> Float {
        get { values[row * columns + column] }
        set { values[row * columns + column] = newValue }
    }

    /// op(a) · op(b), where op transposes when asked: single-precision GEMM from OpenBLAS.
    public static func product(_ a: Matrix, _ b: Matrix, transposeA: Bool = false, transposeB: Bool = false) -> Matrix {
        let m = transposeA ? a.columns : a.rows
        let k = transposeA ? a.rows : a.columns
        let kb = transposeB ? b.columns : b.rows
        let n = transposeB ? b.rows : b.columns
        precondition(k == kb, "matrix product: inner dimensions \(k) and \(kb) differ")
        var c = Matrix(rows: m, columns: n)
        a.values.withUnsafeBufferPointer { pa in
            b.values.withUnsafeBufferPointer { pb in
                c.values.withUnsafeMutableBufferPointer { pc in
                    gemm(m: m, n: n, k: k, alpha: 1, a: pa.baseAddress!, lda: a.columns, transposeA: transposeA,
                         b: pb.baseAddress!, ldb: b.columns, transposeB: transposeB, beta: 0, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }
}

/// C ← α·op(A)·op(B) + β·C for row-major single-precision matrices (cblas_sgemm): op(A) is m×k,
/// op(B) is k×n, C is m×n; lda, ldb, ldc are the row strides of A, B and C as stored.
public func gemm(m: Int, n: Int, k: Int, alpha: Float = 1,
                 a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                 b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                 beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    _ = blasThreadsConfigured
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
}

/// OpenBLAS on one thread: the products Lockstep needs (global attention at the coarsest level)
/// are small, and the callers run several of them and their own loops in parallel on both cores;
/// OpenBLAS's own threads only oversubscribed the two cores.
private let blasThreadsConfigured: Void = openblas_set_num_threads(1)
