import Glibc

/// Reads a whole (small) file, naming the path in any error.
package enum FileContents {
    package static let maximumSize = 16 << 20

    package static func read(path: String) throws(SystemError) -> [UInt8] {
        let fd = OwnedFD(taking: try Posix.retrying(.open, nil, path) { open(path, O_RDONLY | O_CLOEXEC) })
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = try Posix.retrying(.read, nil, path) { () -> Int in
                chunk.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, $0.count) }
            }
            if count == 0 { return contents }
            contents += chunk[..<count]
            if contents.count > maximumSize { throw SystemError(.read, nil, "\(path) (larger than 16 MiB)", errno: EFBIG) }
        }
    }
}
