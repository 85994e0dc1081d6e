import WireFormat
/// Reads a layout from JSON text and plans it, reporting every problem of
/// the file at once.
public enum LayoutLoader {
    /// `source` names the layout in messages (a path or "built-in default").
    public static func load<Bytes: Collection>(json: Bytes, source: String) throws(LayoutError) -> LayoutPlan
    where Bytes.Element == UInt8 {
        let document: JSONValue
        do {
            document = try JSONReader.parse(json)
        } catch {
            throw LayoutError(source: source, problems: [LayoutProblem(subject: nil, message: "bad JSON at \(error)")])
        }
        let decoded = LayoutDecoder.decode(document)
        guard decoded.problems.isEmpty else {
            // Keep going with what did decode, so semantic problems of the
            // other regions are reported in the same run.
            let semantic = LayoutPlanner.validate(decoded.regions, names: decoded.names)
            throw LayoutError(source: source, problems: decoded.problems + semantic)
        }
        return try LayoutPlanner.plan(LayoutSpec(regions: decoded.regions.compactMap { $0 }), source: source)
    }

    /// The layout compiled into the binary, identical to conf/vsoc_mem.json
    /// (planned from its regions as values; tests prove they are the text's).
    public static func loadDefault() -> LayoutPlan {
        do {
            return try LayoutPlanner.plan(LayoutSpec(regions: DefaultLayout.regions), source: DefaultLayout.sourceName)
        } catch {
            // A test proves the built-in text is valid; this cannot happen.
            fatalError("built-in layout is invalid: \(error)")
        }
    }
}
