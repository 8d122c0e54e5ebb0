import Tensor
import Testing
import TestSupport

@Suite struct DotProductTests {
    /// Every product of a run of keys, whichever batch (four, two, one) computes it, matches the
    /// sum taken in Double: a batch that read the wrong key or skipped a piece would not.
    @Test func productsOfARunOfKeysMatchTheDirectSums() {
        var random = SeededRandom(5)
        for length in [8, 64] {
            for count in 1...9 {
                let query = (0..<length).map { _ in Float(2 * random.uniform() - 1) }
                let keys = (0..<(length * count)).map { _ in Float(2 * random.uniform() - 1) }
                var out = [Float](repeating: .nan, count: count + 1)
                query.withUnsafeBufferPointer { q in keys.withUnsafeBufferPointer { k in out.withUnsafeMutableBufferPointer { o in
                    dotProducts(q.baseAddress!, keys: k.baseAddress!, length: length, count: count, into: o.baseAddress!)
                } } }
                for j in 0..<count {
                    let exact = (0..<length).reduce(0.0) { $0 + Double(query[$1]) * Double(keys[j * length + $1]) }
                    #expect(abs(Double(out[j]) - exact) < 1e-5, "length \(length), \(count) keys, key \(j)")
                }
                #expect(out[count].isNaN, "wrote past the last key")
            }
        }
    }
}
