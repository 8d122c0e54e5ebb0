import CFFmpeg
import Foundation

/// CRC-32 (IEEE 802.3, as zlib's `crc32` and `cksum -a crc32b` give it), by FFmpeg's table.
/// Files Lockstep writes to be read back later carry one, so that a byte changed on the way
/// (a damaged disk or copy, an edit by hand) is found before it is trusted.
public enum Checksum {
    /// The CRC of `bytes`, continuing `previous` (the CRC of what came before them; 0 to start).
    public static func crc32(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return previous }
        // FFmpeg's av_crc leaves out the standard CRC-32's inversions before and after.
        return ~av_crc(av_crc_get_table(AV_CRC_32_IEEE_LE), ~previous, base.assumingMemoryBound(to: UInt8.self), bytes.count)
    }

    /// The CRC of `data`.
    public static func crc32(_ data: Data, continuing previous: UInt32 = 0) -> UInt32 {
        data.withUnsafeBytes { crc32($0, continuing: previous) }
    }

    /// The CRC of the first `length` bytes of `file`, read from its start a megabyte at a time.
    /// Throws what reading throws; fewer bytes than `length` is an error too.
    public static func crc32(of file: FileHandle, length: Int) throws -> UInt32 {
        try file.seek(toOffset: 0)
        var crc: UInt32 = 0, left = length
        while left > 0 {
            guard let chunk = try file.read(upToCount: min(left, 1 << 20)), !chunk.isEmpty else {
                throw CocoaError(.fileReadCorruptFile)
            }
            crc = crc32(chunk, continuing: crc)
            left -= chunk.count
        }
        return crc
    }
}
