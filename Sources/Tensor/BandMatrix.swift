/// A symmetric positive definite band matrix (entries more than `bandwidth` off the diagonal are
/// zero), built up entry by entry and solved by banded Cholesky factorisation: n · bandwidth² / 2
/// operations rather than n³ / 3. (LAPACK's dpbsv does the same, but for the narrow bands used
/// here its column-by-column BLAS calls cost three times as much.)
public struct SymmetricBandMatrix: Sendable {
    public let size: Int
    public let bandwidth: Int
    /// LAPACK's upper band storage, column by column: A[i][j] (i ≤ j) at (bandwidth + i − j) + j · (bandwidth + 1).
    @usableFromInline var storage: [Double]

    public init(size: Int, bandwidth: Int) {
        precondition(size > 0 && bandwidth >= 0)
        self.size = size
        self.bandwidth = min(bandwidth, size - 1)
        storage = [Double](repeating: 0, count: (self.bandwidth + 1) * size)
    }

    /// Adds `value` to A[i][i].
    @inlinable
    public mutating func addToDiagonal(_ value: Double, _ i: Int) {
        storage[bandwidth + i * (bandwidth + 1)] += value
    }

    /// Adds `value` to A[i][j] and to A[j][i]: a symmetric pair, so where i = j the diagonal gets
    /// it twice (as the term v · (e_i e_jᵀ + e_j e_iᵀ) of a quadratic form says).
    @inlinable
    public mutating func addSymmetricPair(_ value: Double, _ i: Int, _ j: Int) {
        storage[offset(i, j)] += i == j ? 2 * value : value
    }

    public func diagonal(_ i: Int) -> Double { storage[bandwidth + i * (bandwidth + 1)] }

    /// Where A[i][j] (or A[j][i]) lies in the band storage.
    @inlinable
    func offset(_ i: Int, _ j: Int) -> Int {
        let (r, c) = i <= j ? (i, j) : (j, i)
        precondition(c - r <= bandwidth, "entry outside the band")
        return (bandwidth + r - c) + c * (bandwidth + 1)
    }

    /// x with A x = b; nil if the matrix is not positive definite.
    public func solve(_ b: [Double]) -> [Double]? {
        precondition(b.count == size)
        let n = size, kd = bandwidth, column = kd + 1
        var u = storage, x = b
        let definite = u.withUnsafeMutableBufferPointer { ub -> Bool in x.withUnsafeMutableBufferPointer { xb -> Bool in
            let u = ub.baseAddress!, x = xb.baseAddress!
            // A = Uᵀ U, column by column. Column j of the storage holds U[i][j] for
            // i = j − kd … j at kd + i − j: the sums are dot products of contiguous runs.
            for j in 0..<n {
                let first = max(0, j - kd), cj = u + (j &* column &+ kd &- j)
                for i in first..<j {
                    let ci = u + (i &* column &+ kd &- i)
                    var s = cj[i]
                    for k in first..<i { s -= ci[k] * cj[k] }
                    cj[i] = s / ci[i]
                }
                var d = cj[j]
                for k in first..<j { d -= cj[k] * cj[k] }
                guard d > 0 else { return false }
                cj[j] = d.squareRoot()
            }
            // Uᵀ z = b, then U x = z, both along columns.
            for j in 0..<n {
                let cj = u + (j &* column &+ kd &- j)
                var s = x[j]
                for k in max(0, j - kd)..<j { s -= cj[k] * x[k] }
                x[j] = s / cj[j]
            }
            for j in stride(from: n - 1, through: 0, by: -1) {
                let cj = u + (j &* column &+ kd &- j)
                x[j] /= cj[j]
                let xj = x[j]
                for k in max(0, j - kd)..<j { x[k] -= cj[k] * xj }
            }
            return true
        } }
        return definite ? x : nil
    }
}
