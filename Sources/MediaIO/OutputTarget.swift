import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The rules every output follows: never the input, never an existing path without
/// `overwrite`, written under a temporary name in the same directory and renamed into place
/// when complete, so a failure or Ctrl-C leaves nothing under the final name.
public struct OutputTarget: Sendable {
    /// Where the user asked the output to go.
    public let finalPath: String
    /// Where it is written until it is complete.
    public let temporaryPath: String
    public let overwrite: Bool
    /// True for "-" and for an existing FIFO or character device (`/dev/null`, a named pipe):
    /// written to as it goes, with no temporary name. They hold nothing that writing could lose,
    /// and renaming a file over one would replace the device or pipe itself.
    public let writesInPlace: Bool

    /// True for "-": standard output, written as it goes (a pipe has no final name to protect).
    public var isStandardOutput: Bool { StandardStream.isStandard(finalPath) }

    /// How the output is named in messages.
    public var shownName: String { isStandardOutput ? "stdout" : finalPath }

    /// Checks the output path against `inputs` and the file system, and reserves a temporary name.
    /// `directory`: the output is a frame directory, not a file. An existing path of the other
    /// kind is refused, even with `overwrite` (before, `flicker --csv frames --overwrite` replaced
    /// a directory of frames with its CSV).
    public init(path: String, inputs: [String], overwrite: Bool, directory: Bool = false) throws {
        self.overwrite = overwrite
        if StandardStream.isStandard(path) {
            finalPath = path
            temporaryPath = path
            writesInPlace = true
            return
        }
        let url = URL(fileURLWithPath: path)
        let fm = FileManager.default
        for input in inputs where Self.isSameFile(input, path) {
            throw MediaError(.sameAsInput, path: path, "the output is the input \(input); choose another output")
        }
        var status = stat()
        if stat(path, &status) == 0 {
            switch status.st_mode & S_IFMT {
            case S_IFREG, S_IFDIR:
                break
            case S_IFIFO, S_IFCHR where !directory:
                finalPath = path
                temporaryPath = path
                writesInPlace = true
                return
            default:
                throw MediaError(.unwritable, path: path, "is a \(Self.kindName(status.st_mode)), not a file or a directory: choose another output")
            }
        }
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && isDirectory.boolValue && !directory {
            throw MediaError(.outputExists, path: path, "is a directory, and the output is a file: remove it or choose another name")
        }
        if exists && !isDirectory.boolValue && directory {
            throw MediaError(.outputExists, path: path, "is a file, and the output asked for is a frame directory (a final /): choose another name")
        }
        if exists && !overwrite {
            throw MediaError(.outputExists, path: path, "already exists (use --overwrite to replace it)")
        }
        if exists && isDirectory.boolValue { try Self.checkReplaceable(directory: path, inputs: inputs) }
        let parent = url.deletingLastPathComponent().path
        var parentIsDirectory: ObjCBool = false
        guard fm.fileExists(atPath: parent, isDirectory: &parentIsDirectory), parentIsDirectory.boolValue else {
            throw MediaError(.unwritable, path: path, "cannot write here: the directory \(parent) does not exist")
        }
        if access(parent, W_OK) != 0 {
            throw MediaError(.unwritable, path: path, "cannot write here: \(String(cString: strerror(errno)))")
        }
        let name = url.lastPathComponent
        let ext = url.pathExtension
        let stem = ext.isEmpty ? name : String(name.dropLast(ext.count + 1))
        // The temporary name must fit where the final one does (255 bytes): a long stem is left out.
        let suffix = "lockstep-partial-\(getpid())" + (ext.isEmpty ? "" : ".\(ext)")
        let partial = name.utf8.count + suffix.utf8.count + 2 > 255 ? ".\(suffix)" : ".\(stem).\(suffix)"
        finalPath = path
        temporaryPath = url.deletingLastPathComponent().appendingPathComponent(partial).path
        writesInPlace = false
    }

    /// A file type as messages name it.
    static func kindName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: return "named pipe"
        case S_IFCHR: return "character device"
        case S_IFBLK: return "block device"
        case S_IFSOCK: return "socket"
        default: return "special file"
        }
    }

    /// Registers the temporary path for removal on an ending signal or a crash.
    public func begin() {
        if !writesInPlace { TemporaryFiles.shared.add(temporaryPath) }
    }

    /// Moves the finished temporary file or directory to the final name.
    public func commit() throws {
        if writesInPlace { return }
        try TemporaryFiles.shared.unlessInterrupted(moveIntoPlace)
        TemporaryFiles.shared.remove(temporaryPath)
    }

    private func moveIntoPlace() throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let replacingDirectory = fm.fileExists(atPath: finalPath, isDirectory: &isDirectory) && isDirectory.boolValue
        // Another job may have made the output since this one checked (two runs with one -o).
        let appeared = MediaError(.outputExists, path: finalPath, "appeared while this job wrote it (another job?); nothing was replaced (use --overwrite to replace it)")
        if replacingDirectory && !overwrite { throw appeared }
        if replacingDirectory {
            // rename(2) cannot replace a non-empty directory: move the old one aside first.
            let aside = temporaryPath + ".old"
            if rename(finalPath, aside) != 0 { throw renameError() }
            if rename(temporaryPath, finalPath) != 0 {
                let error = renameError()
                _ = rename(aside, finalPath)
                throw error
            }
            try? fm.removeItem(atPath: aside)
        } else if !overwrite {
            // A hard link is made only where nothing is, so neither job replaces the other.
            if link(temporaryPath, finalPath) == 0 {
                unlink(temporaryPath)
            } else if errno == EEXIST || fm.fileExists(atPath: finalPath) {
                throw appeared
            } else if rename(temporaryPath, finalPath) != 0 {  // a file system without hard links
                throw renameError()
            }
        } else if rename(temporaryPath, finalPath) != 0 {
            throw renameError()
        }
    }

    /// Writes a whole small file (an image, a report) under the temporary name, then commits it.
    public func write(_ data: Data) throws {
        if writesInPlace {
            do {
                guard let handle = isStandardOutput ? FileHandle.standardOutput : FileHandle(forWritingAtPath: finalPath) else {
                    throw MediaError(.unwritable, path: shownName, "cannot open it: \(String(cString: strerror(errno)))")
                }
                try handle.write(contentsOf: data)
                if !isStandardOutput { try handle.close() }
            } catch let error as MediaError {
                throw error
            } catch {
                throw MediaError(.io, path: shownName, "cannot write: \(error.localizedDescription)")
            }
            return
        }
        begin()
        do {
            try data.write(to: URL(fileURLWithPath: temporaryPath))
            try commit()
        } catch let error as MediaError {
            discard()
            throw error
        } catch {
            discard()
            let full = (error as NSError).code == NSFileWriteOutOfSpaceError
            throw MediaError(full ? .diskFull : .io, path: finalPath, full ? "disk full while writing" : "cannot write: \(error.localizedDescription)")
        }
    }

    /// Removes whatever was written.
    public func discard() {
        if writesInPlace { return }
        TemporaryFiles.delete(temporaryPath)
        TemporaryFiles.shared.remove(temporaryPath)
    }

    private func renameError() -> MediaError {
        MediaError(.io, path: finalPath, "cannot move the finished output into place: \(String(cString: strerror(errno)))")
    }

    /// A directory is replaced whole (`commit`), so `--overwrite` replaces only a frame
    /// directory: one that holds no input and nothing but frames (images, no subdirectories).
    /// Anything else in it would be lost with it.
    static func checkReplaceable(directory: String, inputs: [String]) throws {
        let root = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath().path
        for input in inputs where !StandardStream.isStandard(input) {
            let resolved = URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath().path
            if resolved == root || resolved.hasPrefix(root == "/" ? "/" : root + "/") {
                throw MediaError(.sameAsInput, path: directory, "holds the input \(input), and --overwrite would replace the whole directory; choose another output")
            }
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for entry in entries.sorted() {
            var isDirectory: ObjCBool = false
            let full = (directory as NSString).appendingPathComponent(entry)
            let isFrame = FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) && !isDirectory.boolValue
                && ImageFile.extensions.contains((entry as NSString).pathExtension.lowercased())
            if !isFrame {
                throw MediaError(.outputExists, path: directory, "holds \(entry), which is not a frame, and --overwrite would replace the whole directory; choose another output")
            }
        }
    }

    /// True when both paths name the same file (the same inode, or the same resolved path).
    public static func isSameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        if stat(a, &sa) == 0 && stat(b, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
        let ra = URL(fileURLWithPath: a).standardizedFileURL.resolvingSymlinksInPath().path
        let rb = URL(fileURLWithPath: b).standardizedFileURL.resolvingSymlinksInPath().path
        return ra == rb
    }
}

/// Temporary outputs in progress, removed if the process is interrupted.
public final class TemporaryFiles: @unchecked Sendable {
    public static let shared = TemporaryFiles()
    private let lock = NSLock()
    private var paths = Set<String>()
    private var sources: [DispatchSourceSignal] = []
    /// Set once an ending signal came: the job is being ended, and its outputs removed.
    private var interrupted = false

    func add(_ path: String) {
        lock.lock()
        paths.insert(path)
        if let slot = (0..<CrashCleanup.slots).first(where: { CrashCleanup.paths[$0] == nil }) { CrashCleanup.paths[slot] = strdup(path) }
        lock.unlock()
    }

    func remove(_ path: String) {
        lock.lock()
        paths.remove(path)
        for slot in 0..<CrashCleanup.slots {
            if let held = CrashCleanup.paths[slot], strcmp(held, path) == 0 {
                CrashCleanup.paths[slot] = nil
                free(held)
            }
        }
        lock.unlock()
    }

    /// On a crash (a failed precondition, a fault): the temporary output files are removed, and
    /// the crash then goes on as it would have (Swift's backtrace, death by the signal). Only
    /// files: nothing that removing a directory needs is safe in a signal handler.
    /// (Called on the main thread before any other starts: the signals are unblocked there, as
    /// a parent that blocked them would leave them, and the threads started later inherit that.)
    public func removeOnCrash() {
        _ = CrashCleanup.paths  // made now, not first in the handler
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        for signalNumber in CrashCleanup.signals { sigaddset(&unblocked, signalNumber) }
        pthread_sigmask(SIG_UNBLOCK, &unblocked, nil)
        for signalNumber in CrashCleanup.signals {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = CrashCleanup.handler
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_SIGINFO
            sigaction(signalNumber, &action, CrashCleanup.previous + Int(signalNumber))
        }
    }

    /// Removes every registered temporary output.
    public func removeAll() {
        lock.lock()
        let current = paths
        paths.removeAll()
        lock.unlock()
        for path in current { Self.delete(path) }
    }

    /// Runs `body` (an output's move into place) unless the job is being interrupted, and keeps
    /// the interruption from starting meanwhile: an output is either moved whole into place or
    /// removed, never removed in part under its final name. Interrupted, this thread waits for
    /// the signal's handler to end the process.
    func unlessInterrupted(_ body: () throws -> Void) rethrows {
        lock.lock()
        defer { lock.unlock() }
        if interrupted { Self.waitForExit() }
        try body()
    }

    /// A thread whose work failed because the job is being interrupted (its frame directory was
    /// removed under it) waits here for the signal's handler to end the process, with the
    /// interruption's status and message rather than its own error's.
    public func waitIfInterrupted() {
        lock.lock()
        let now = interrupted
        lock.unlock()
        if now { Self.waitForExit() }
    }

    private static func waitForExit() -> Never {
        while true { sleep(1) }
    }

    /// Removes a temporary output that another thread may still be writing. A frame directory is
    /// first renamed away, so that the writer's next frame cannot land in it between the removal
    /// of its contents and of the directory itself (a directory that is not empty stays).
    static func delete(_ path: String) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else { try? FileManager.default.removeItem(atPath: path); return }
        let aside = path + ".removing"
        let target = rename(path, aside) == 0 ? aside : path
        for _ in 0..<3 where FileManager.default.fileExists(atPath: target) {
            try? FileManager.default.removeItem(atPath: target)
        }
    }

    /// The signals that end a job by default and that another process or the terminal sends:
    /// Ctrl-C and Ctrl-\, `kill`, a closed terminal or ssh session (SIGHUP), a scheduler's
    /// limits (SIGXCPU, timers).
    public static let endingSignals: [Int32] = [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGXCPU]

    /// On any of `endingSignals`: remove the temporary outputs, print `message`, exit 128 plus
    /// the signal's number (130 for Ctrl-C, 143 for SIGTERM); one that was ignored when the job
    /// started stays ignored. A file grown past the size limit
    /// (SIGXFSZ) is not a signal to end by but a write that fails, reported as such.
    ///
    /// The exit is `_exit`, not `exit`: the other threads are still at work, and `exit` runs the
    /// libraries' destructors under them (OpenBLAS freed its buffers under a matrix product on
    /// the main thread: signal 11 and a crash report after the one-line message).
    public func removeOnSignals(message: @escaping @Sendable (Int32) -> String) {
        signal(SIGXFSZ, SIG_IGN)
        for signalNumber in Self.endingSignals {
            // A signal ignored when the job started stays ignored: `nohup` ignores SIGHUP so
            // that the job outlives its terminal, a script's background job ignores SIGINT.
            let before = signal(signalNumber, SIG_IGN)
            if unsafeBitCast(before, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) { continue }
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [weak self] in
                if let self {
                    lock.lock()
                    interrupted = true
                    lock.unlock()
                    removeAll()
                }
                FileHandle.standardError.write(Data((message(signalNumber) + "\n").utf8))
                // No flush of stdout either: a thread blocked writing to a full pipe holds its
                // lock, and what it held is partial output anyway.
                _exit(128 + signalNumber)
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// What the crash handler reads: fixed C storage, since a signal handler may not take locks or
/// allocate (`TemporaryFiles.removeOnCrash`).
enum CrashCleanup {
    static let signals: [Int32] = [SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV]
    static let slots = 32
    /// The temporary outputs' paths, as C strings; nil where a slot is free.
    nonisolated(unsafe) static let paths: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: slots)
        p.initialize(repeating: nil, count: slots)
        return p
    }()
    /// The handlers there were before, by signal number (Swift's backtracer's).
    nonisolated(unsafe) static let previous: UnsafeMutablePointer<sigaction> = {
        let p = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
        p.initialize(repeating: sigaction(), count: 65)
        return p
    }()
    /// A fault (sent by the kernel: a failed precondition's trap, a bad access) or an abort:
    /// unlinks the paths and puts the previous handler back. A fault then happens again on
    /// return, for that handler; an abort is raised again, and ends the process. The other
    /// signals sent by another process (`kill`), which Swift's handler lets go by too, change
    /// nothing.
    static let handler: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = { signalNumber, info, _ in
        let fault = (info?.pointee.si_code ?? 0) > 0
        guard fault || signalNumber == SIGABRT else { return }
        for slot in 0..<CrashCleanup.slots {
            if let path = CrashCleanup.paths[slot] { unlink(path) }
        }
        if fault {
            sigaction(signalNumber, CrashCleanup.previous + Int(signalNumber), nil)
        } else {
            signal(SIGABRT, SIG_DFL)
            raise(SIGABRT)
        }
    }
}
