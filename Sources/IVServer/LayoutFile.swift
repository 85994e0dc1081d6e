import LinuxSystem

// Kept out of Layout/, which stays pure (no I/O): the fuzzers compile that
// folder on its own.
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
