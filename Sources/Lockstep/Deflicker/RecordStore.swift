import Foundation
import MediaIO

/// Fixed-length records of Floats in a temporary file that is unlinked as soon as it is open:
/// what a first pass learns about every frame is kept off the heap, so memory stays the same
/// however long the video, and nothing is left behind however the process ends.
final class RecordStore {
    let length: Int
    private let descriptor: Int32
    private let directory: String
    private(set) var count = 0

    init(recordLength: Int) throws {
        length = recordLength
        directory = NSTemporaryDirectory()
        var template = Array((directory + (directory.hasSuffix("/") ? "" : "/") + "lockstep-analysis-XXXXXX").utf8CString)
        descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            throw MediaError(.unwritable, path: directory, "cannot create a temporary file: \(String(cString: strerror(errno)))")
        }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
    }

    deinit { close(descriptor) }

    func append(_ values: [Float]) throws {
        precondition(values.count == length)
        let bytes = length * MemoryLayout<Float>.size
        let written = values.withUnsafeBytes { pwrite(descriptor, $0.baseAddress!, bytes, off_t(count * bytes)) }
        guard written == bytes else {
            let full = written >= 0 || errno == ENOSPC
            throw MediaError(full ? .diskFull : .io, path: directory,
                             full ? "disk full while keeping the analysis of each frame" : "cannot write the analysis: \(String(cString: strerror(errno)))")
        }
        count += 1
    }

    func read(_ index: Int) throws -> [Float] {
        precondition(index >= 0 && index < count)
        let bytes = length * MemoryLayout<Float>.size
        var values = [Float](repeating: 0, count: length)
        let got = values.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress!, bytes, off_t(index * bytes)) }
        guard got == bytes else { throw MediaError(.io, path: directory, "cannot read back the analysis: \(String(cString: strerror(errno)))") }
        return values
    }
}
