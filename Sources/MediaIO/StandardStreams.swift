import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// "-" as INPUT or OUTPUT: the process's standard input or output, through FFmpeg's pipe
/// protocol, so that Lockstep sits between two FFmpeg commands. A pipe is read once, in order:
/// a job that reads its input twice spools it first (`StandardInputSpool`).
public enum StandardStream {
    /// The name that means standard input (as INPUT) or standard output (as OUTPUT).
    public static let dash = "-"

    public static func isStandard(_ path: String) -> Bool { path == dash }

    /// Refuses a standard input that is a terminal: nothing was piped in.
    static func requirePipedInput() throws {
        if isatty(STDIN_FILENO) != 0 {
            throw MediaError(.invalidArgument, path: "stdin", "is a terminal: pipe a video into it (ffmpeg -i IN -f yuv4mpegpipe - | lockstep …) or give a file")
        }
    }

    /// The FFmpeg URL of a path to read: standard input for "-".
    static func inputURL(_ path: String) -> String { isStandard(path) ? "pipe:0" : path }

    /// How a path is named in messages: "stdin" for "-" and for the spool that holds what came
    /// on standard input; the path itself otherwise.
    public static func shownName(_ path: String) -> String {
        if isStandard(path) { return "stdin" }
        return StandardInputSpool.spooledPath == path ? "stdin" : path
    }
}

/// Standard input kept in a temporary file, for jobs that read their input more than once
/// (deflicker's two passes, edit's keyframes before the stream). The file is unlinked as soon as
/// it is made and reached through /proc/self/fd (Linux), so it is gone when the process ends, however it
/// ends. It is bounded: the copy stops with an error, rather than fill the disk the output needs,
/// once less than `reserveBytes` would remain free in the temporary directory (TMPDIR).
public enum StandardInputSpool {
    /// Free space the spool always leaves in its file system.
    public static let reserveBytes: Int64 = 1 << 30

    /// The path that reads back what came on standard input, once `spool()` has run.
    public nonisolated(unsafe) private(set) static var spooledPath: String?

    /// Copies all of standard input into the spool and returns a path that reads it back (once
    /// per process; later calls return the same path). `progress` gets the bytes copied so far,
    /// now and then.
    public static func spool(progress: (Int64) -> Void = { _ in }) throws -> String {
        if let spooledPath { return spooledPath }
        try StandardStream.requirePipedInput()
        let directory = FileManager.default.temporaryDirectory.path
        let fd = try makeUnlinkedFile(in: directory)
        do {
            try copyStandardInput(to: fd, directory: directory, progress: progress)
        } catch {
            close(fd)
            throw error
        }
        let path = "/proc/self/fd/\(fd)"
        spooledPath = path
        return path
    }

    /// Copies all of standard input to `fd`, leaving `reserveBytes` free in `directory`.
    private static func copyStandardInput(to fd: Int32, directory: String, progress: (Int64) -> Void) throws {
        let bufferSize = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        var sinceCheck: Int64 = .max
        while true {
            let got = read(STDIN_FILENO, buffer, bufferSize)
            if got == 0 { break }
            if got < 0 {
                if errno == EINTR { continue }
                throw MediaError(.io, path: "stdin", "cannot read: \(String(cString: strerror(errno)))")
            }
            // The free space is checked every 64 MB: a cheap call, and a bound that holds to within that.
            if sinceCheck >= 64 << 20 {
                var fs = statvfs()
                if fstatvfs(fd, &fs) == 0, Int64(fs.f_bavail) * Int64(fs.f_frsize) - Int64(got) < reserveBytes {
                    throw MediaError(.diskFull, path: "stdin", "the temporary directory \(directory) is nearly full after \(megabytes(total)) of the stream (a job that reads its input twice keeps stdin there; set TMPDIR to a larger disk, or give a file)")
                }
                sinceCheck = 0
            }
            var offset = 0
            while offset < got {
                let wrote = write(fd, buffer + offset, got - offset)
                if wrote < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw MediaError(code == ENOSPC ? .diskFull : .io, path: "stdin", code == ENOSPC
                        ? "the temporary directory \(directory) is full after \(megabytes(total)) of the stream (set TMPDIR to a larger disk, or give a file)"
                        : "cannot keep it in \(directory): \(String(cString: strerror(code)))")
                }
                offset += wrote
            }
            total += Int64(got)
            sinceCheck += Int64(got)
            progress(total)
        }
        if total == 0 { throw MediaError(.notMedia, path: "stdin", "is empty: nothing came through the pipe") }
    }

    /// A file in `directory` whose name is removed as soon as it is made: only the descriptor
    /// holds it.
    private static func makeUnlinkedFile(in directory: String) throws -> Int32 {
        var template = Array((directory + "/.lockstep-stdin-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw MediaError(.unwritable, path: "stdin", "cannot keep it in the temporary directory \(directory): \(String(cString: strerror(errno))) (set TMPDIR)")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }

    /// A size as people read it: "840 KB", "12 MB", "1.4 GB".
    public static func megabytes(_ bytes: Int64) -> String {
        if bytes >= 1 << 30 { return String(format: "%.1f GB", Double(bytes) / Double(1 << 30)) }
        return bytes >= 1 << 20 ? "\(bytes >> 20) MB" : "\(max(1, bytes >> 10)) KB"
    }
}
