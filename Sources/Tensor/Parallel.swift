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
