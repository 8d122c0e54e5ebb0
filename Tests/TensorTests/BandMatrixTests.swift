import Tensor
import Testing
import TestSupport

@Suite struct BandMatrixTests {
    /// A random symmetric band matrix, made definite by a heavy diagonal, solved against a known x;
    /// and a matrix that is not definite is refused rather than solved into nonsense.
    @Test func solvesABandSystem() {
        let n = 60, band = 7
        var random = SeededRandom(11)
        var dense = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        var matrix = SymmetricBandMatrix(size: n, bandwidth: band)
        for i in 0..<n {
            matrix.addToDiagonal(Double(2 * band + 1), i)
            dense[i][i] += Double(2 * band + 1)
            for j in (i + 1)..<min(i + band + 1, n) {
                let v = 2 * random.uniform() - 1
                matrix.addSymmetricPair(v, i, j)
                dense[i][j] += v
                dense[j][i] += v
            }
        }
        let x = (0..<n).map { _ in random.uniform() - 0.5 }
        let b = dense.map { row in zip(row, x).reduce(0) { $0 + $1.0 * $1.1 } }
        let solved = matrix.solve(b)
        #expect(solved != nil)
        for (s, t) in zip(solved ?? [], x) { #expect(abs(s - t) < 1e-9) }

        var indefinite = SymmetricBandMatrix(size: 3, bandwidth: 1)
        indefinite.addToDiagonal(1, 0); indefinite.addToDiagonal(1, 1); indefinite.addToDiagonal(1, 2)
        indefinite.addSymmetricPair(2, 0, 1)
        #expect(indefinite.solve([1, 1, 1]) == nil)
    }
}
