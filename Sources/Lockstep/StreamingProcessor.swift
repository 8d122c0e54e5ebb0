import Foundation
import MediaIO
import Tensor

/// How far a streaming job has got, for a progress display.
public struct JobProgress: Sendable {
    public init(framesDone: Int, framesTotal: Int?, elapsedSeconds: Double) {
        self.framesDone = framesDone
        self.framesTotal = framesTotal
        self.elapsedSeconds = elapsedSeconds
    }

    public var framesDone: Int
    /// Frames expected in all, when the source declares it.
    public var framesTotal: Int?
    public var elapsedSeconds: Double
    /// Media time done: from the first frame's start to the last frame's end, in seconds.
    public var mediaSeconds: Double = 0

    public var framesPerSecond: Double { elapsedSeconds > 0 ? Double(framesDone) / elapsedSeconds : 0 }
    public var etaSeconds: Double? {
        guard let total = framesTotal, framesDone > 0, total >= framesDone else { return nil }
        return Double(total - framesDone) / max(framesPerSecond, 1e-9)
    }
}

/// Thrown when the progress handler asks to stop.
public struct Cancelled: Error {}

/// The frames-outer streaming loop: a reader thread decodes, the calling thread processes, a
/// writer thread encodes, with at most `inFlight` frames queued between stages. Decoding,
/// processing and encoding overlap on separate cores, and memory does not grow with the video.
public enum StreamingProcessor {
    /// Runs `source` → `process` → `sink` (when given). On any error, or when `progress`
    /// returns false, the sink is aborted and nothing is left under its final name.
    /// Returns the final progress: frames processed and time taken.
    @discardableResult
    public static func run(source: FrameSource, sink: FrameSink?, inFlight: Int = 2,
                           process: (inout VideoFrame) throws -> Void,
                           progress: (JobProgress) -> Bool = { _ in true }) throws -> JobProgress {
        let decoded = BoundedQueue<VideoFrame>(capacity: inFlight)
        let processed = BoundedQueue<VideoFrame>(capacity: inFlight)
        let failure = FirstError()
        let readerDone = DispatchSemaphore(value: 0)
        let writerDone = DispatchSemaphore(value: 0)

        let reader = Thread {
            defer { decoded.close(); readerDone.signal() }
            do {
                while let frame = try source.next() {
                    if !decoded.push(frame) { return }
                }
            } catch {
                failure.record(error)
            }
        }
        reader.name = "lockstep.decode"
        reader.start()

        if let sink {
            let writer = Thread {
                defer { writerDone.signal() }
                while let frame = processed.pop() {
                    do {
                        try sink.write(frame)
                    } catch {
                        failure.record(error)
                        processed.cancel()
                        decoded.cancel()
                        return
                    }
                }
            }
            writer.name = "lockstep.encode"
            writer.start()
        } else {
            writerDone.signal()
        }

        let start = Date()
        var done = JobProgress(framesDone: 0, framesTotal: source.info.declaredFrameCount, elapsedSeconds: 0)
        let timeBase = source.info.timeBase.value
        var firstPts: Int64?
        do {
            while let frame = decoded.pop() {
                if failure.error != nil { break }
                var frame = frame
                try process(&frame)
                try sink?.prepare(&frame)
                BufferPool.shared.releaseIdle()
                done.framesDone += 1
                if firstPts == nil { firstPts = frame.pts }
                done.mediaSeconds = Double(frame.pts + frame.duration - firstPts!) * timeBase
                done.elapsedSeconds = Date().timeIntervalSince(start)
                if sink != nil, !processed.push(frame) { break }
                if !progress(done) { throw Cancelled() }
            }
        } catch {
            failure.record(error)
        }
        if failure.error != nil { decoded.cancel(); processed.cancel() }
        processed.close()
        writerDone.wait()
        readerDone.wait()

        if let error = failure.error {
            sink?.abort()
            throw error
        }
        do {
            if source.reachedInputEnd { sink?.inputEnded() }
            try sink?.finish()
        } catch {
            sink?.abort()
            throw error
        }
        done.elapsedSeconds = Date().timeIntervalSince(start)
        return done
    }
}

/// The first error any stage hit; later ones are consequences of it.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Error?
    var error: Error? { lock.lock(); defer { lock.unlock() }; return stored }
    func record(_ error: Error) {
        lock.lock()
        if stored == nil { stored = error }
        lock.unlock()
    }
}
