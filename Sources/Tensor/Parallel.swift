import Dispatch

/// Runs `body` over `0..<count` split into contiguous chunks, one chunk per worker, on all cores.
/// Chunks are contiguous so each worker streams through memory; small jobs run inline.
public func parallelChunks(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(activeCoreCount, max(1, count / max(1, minimumChunk)))
    if workers <= 1 {
        body(0..<count)
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        let start = count * worker / workers
        let end = count * (worker + 1) / workers
        if start < end { body(start..<end) }
    }
}

/// Σ over `0..<count` on all cores: `block(lo, hi)` sums a short run (at most 256 values) in
/// Float, which vectorises; runs are added in Double, so the total keeps ~1e-7 relative precision.
public func parallelSum(_ count: Int, block: (Int, Int) -> Float) -> Double {
    let chunks = max(1, min(activeCoreCount, count / 65536))
    var partial = [Double](repeating: 0, count: chunks)
    partial.withUnsafeMutableBufferPointer { sums in
        let out = sums.baseAddress!
        parallelChunks(chunks) { range in
            for chunk in range {
                let lo = count * chunk / chunks, hi = count * (chunk + 1) / chunks
                var total: Double = 0
                var i = lo
                while i < hi {
                    let end = min(i &+ 256, hi)
                    total += Double(block(i, end))
                    i = end
                }
                out[chunk] = total
            }
        }
    }
    return partial.reduce(0, +)
}

/// The number of cores this process may use, read once.
public let activeCoreCount: Int = {
    #if canImport(Glibc)
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return n > 0 ? Int(n) : 1
    #else
    return 1
    #endif
}()

#if canImport(Glibc)
import Glibc
#endif
