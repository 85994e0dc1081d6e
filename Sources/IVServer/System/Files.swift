import Descriptors
import Glibc

/// Reads a whole (small) file, naming the path in any error.
enum FileContents {
    static let maximumSize = 16 << 20

    static func read(path: String) throws(SystemError) -> [UInt8] {
        let fd = OwnedFD(taking: try Posix.retrying("open", path) { open(path, O_RDONLY | O_CLOEXEC) })
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = try Posix.retrying("read", path) { () -> Int in
                chunk.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, $0.count) }
            }
            if count == 0 { return contents }
            contents += chunk[..<count]
            if contents.count > maximumSize { throw SystemError("read", "\(path) (larger than 16 MiB)", errno: EFBIG) }
        }
    }
}

extension LayoutLoader {
    /// Reads and plans the layout at `path`. A file that cannot be read is
    /// reported as a layout problem naming the path and the cause.
    public static func load(path: String) throws(LayoutError) -> LayoutPlan {
        let contents: [UInt8]
        do {
            contents = try FileContents.read(path: path)
        } catch {
            throw LayoutError(source: path, problems: [LayoutProblem(subject: nil, message: "cannot read \(path): \(error.errnoText)")])
        }
        return try load(json: contents, source: path)
    }
}

extension VMConfig {
    /// Reads and checks a VM configuration file.
    public static func load(path: String) throws(LayoutError) -> VMConfig {
        let contents: [UInt8]
        do {
            contents = try FileContents.read(path: path)
        } catch {
            throw LayoutError(source: path, problems: [LayoutProblem(subject: nil, message: "cannot read \(path): \(error.errnoText)")],
                              kind: "VM configuration")
        }
        return try parse(json: contents, source: path)
    }
}
