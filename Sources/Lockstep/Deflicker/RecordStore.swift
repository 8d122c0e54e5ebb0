import Foundation
import MediaIO

/// Fixed-length records of Floats in a file: what a first pass learns about every frame is kept
/// off the heap, so memory stays the same however long the video. A store made for a pass is a
/// temporary file unlinked as soon as it is open, so nothing is left behind however the process
/// ends; a store read from an analysis file (`DeflickerPlan.read`) is a read-only window on it.
final class RecordStore {
    let length: Int
    private let descriptor: Int32
    /// Where the records start in the file, in bytes.
    private let base: Int
    /// The file or directory named in messages.
    let place: String
    private let writable: Bool
    private(set) var count = 0

    private var recordBytes: Int { length * MemoryLayout<Float>.size }

    init(recordLength: Int) throws {
        length = recordLength
        base = 0
        writable = true
        let directory = NSTemporaryDirectory()
        place = directory
        var template = Array((directory + (directory.hasSuffix("/") ? "" : "/") + "lockstep-analysis-XXXXXX").utf8CString)
        descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            throw MediaError(.unwritable, path: directory, "cannot create a temporary file: \(String(cString: strerror(errno)))")
        }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
    }

    /// The `count` records of `recordLength` Floats at byte `offset` of the file at `path`.
    init(reading path: String, offset: Int, count: Int, recordLength: Int) throws {
        length = recordLength
        base = offset
        writable = false
        place = path
        self.count = count
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw MediaError(.missing, path: path, "cannot read it: \(String(cString: strerror(errno)))") }
    }

    deinit { close(descriptor) }

    func append(_ values: [Float]) throws {
        precondition(writable && values.count == length)
        let bytes = recordBytes
        let written = values.withUnsafeBytes { pwrite(descriptor, $0.baseAddress!, bytes, off_t(count * bytes)) }
        guard written == bytes else {
            let full = written >= 0 || errno == ENOSPC
            throw MediaError(full ? .diskFull : .io, path: place,
                             full ? "disk full while keeping the analysis of each frame" : "cannot write the analysis: \(String(cString: strerror(errno)))")
        }
        count += 1
    }

    func read(_ index: Int) throws -> [Float] {
        precondition(index >= 0 && index < count)
        let bytes = recordBytes
        var values = [Float](repeating: 0, count: length)
        let got = values.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress!, bytes, off_t(base + index * bytes)) }
        guard got == bytes else {
            throw MediaError(.io, path: place, got >= 0 ? "ends early: the analysis is cut short" : "cannot read back the analysis: \(String(cString: strerror(errno)))")
        }
        return values
    }

    /// Appends every record, in order, to `file`.
    func copyAll(to file: FileHandle) throws {
        for index in 0..<count {
            try file.write(contentsOf: try read(index).withUnsafeBytes { Data($0) })
        }
    }
}
