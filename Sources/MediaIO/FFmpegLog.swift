import CFFmpeg
import Foundation

/// FFmpeg's log, captured instead of printed: the tool prints its own one-line errors, and
/// keeps FFmpeg's last error message so a damaged input can be reported with FFmpeg's reason.
public enum FFmpegLog {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var lastError: String?
    nonisolated(unsafe) private static var verbose = false
    nonisolated(unsafe) private static var installed = false

    /// Installs the capturing callback once. With LOCKSTEP_FFMPEG_LOG=1 in the environment,
    /// FFmpeg's warnings and errors also go to stderr, for diagnosing an odd file.
    public static func install() {
        lock.lock(); defer { lock.unlock() }
        verbose = ProcessInfo.processInfo.environment["LOCKSTEP_FFMPEG_LOG"] == "1"
        guard !installed else { return }
        installed = true
        av_log_set_level(verbose ? AV_LOG_WARNING : AV_LOG_ERROR)
        av_log_set_callback { avcl, level, format, arguments in
            guard level <= av_log_get_level(), let format, let arguments else { return }
            var line = [CChar](repeating: 0, count: 1024)
            var printPrefix: Int32 = 1
            av_log_format_line2(avcl, level, format, arguments, &line, Int32(line.count), &printPrefix)
            let text = String(cString: line).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return }
            FFmpegLog.record(level: level, text)
        }
    }

    /// Errors FFmpeg logs on one thread while a reader works there: damage in that reader's input.
    public final class Collector {
        public private(set) var count = 0
        public private(set) var last: String?
        fileprivate func add(_ text: String) { count += 1; last = text }
    }

    private static let collectorKey = "lockstep.ffmpeg-log-collector"

    /// Runs `body` with FFmpeg errors logged on this thread going to `collector`.
    static func collecting<R>(into collector: Collector, _ body: () throws -> R) rethrows -> R {
        let dictionary = Thread.current.threadDictionary
        let previous = dictionary[collectorKey]
        dictionary[collectorKey] = collector
        defer { dictionary[collectorKey] = previous }
        return try body()
    }

    private static func record(level: Int32, _ text: String) {
        if level <= AV_LOG_ERROR, let collector = Thread.current.threadDictionary[collectorKey] as? Collector {
            collector.add(text)
        }
        lock.lock()
        if level <= AV_LOG_ERROR { lastError = text }
        let echo = verbose
        lock.unlock()
        if echo { FileHandle.standardError.write(Data(("ffmpeg: " + text + "\n").utf8)) }
    }

    /// The last error FFmpeg logged since the previous call, and clears it.
    public static func takeLastError() -> String? {
        lock.lock(); defer { lock.unlock() }
        let text = lastError
        lastError = nil
        return text
    }
}
