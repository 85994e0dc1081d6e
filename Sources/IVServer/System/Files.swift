import ServerCore
import LinuxSystem

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
