import WireFormat
import LinuxSystem

/// `ivserver launch --vm-config FILE`: the VM's settings kept apart from the
/// memory layout (the original project's TODO). Format:
///
///     { "binary": "qemu-system-x86_64",
///       "arguments": ["-machine", "q35", "-m", "2G"],
///       "environment": { "NAME": "value" } }
///
/// `binary` is searched in PATH; `arguments` and `environment` (added to
/// ivserver's own) are optional; keys starting with "__" are comments.
public struct VMConfig: Equatable, Sendable {
    public var binary: String
    public var arguments: [String]
    public var environment: [String: String]

    /// Every problem of the file at once, like a layout's.
    public static func parse<Bytes: Collection>(json: Bytes, source: String) throws(LayoutError) -> VMConfig
    where Bytes.Element == UInt8 {
        func fail(_ messages: [String]) -> LayoutError {
            LayoutError(source: source, problems: messages.map { LayoutProblem(subject: nil, message: $0) }, kind: "VM configuration")
        }
        let document: JSONValue
        do {
            document = try JSONReader.parse(json)
        } catch {
            throw fail(["bad JSON at \(error)"])
        }
        guard case let .object(members) = document else { throw fail(["the document must be an object, not \(document.kindName)"]) }
        var problems: [String] = []
        for (key, _) in members where !["binary", "arguments", "environment"].contains(key) && !key.hasPrefix("__") {
            problems.append("unknown field \"\(key)\" (comments must start with \"__\")")
        }
        var binary = ""
        switch document["binary"] {
        case let .string(value)? where !value.isEmpty: binary = value
        case nil: problems.append("field \"binary\" is missing")
        default: problems.append("binary must be a non-empty string")
        }
        var arguments: [String] = []
        switch document["arguments"] {
        case nil: break
        case let .array(values)?:
            for (index, value) in values.enumerated() {
                if case let .string(text) = value { arguments.append(text) } else {
                    problems.append("arguments[\(index)] must be a string, not \(value.kindName)")
                }
            }
        case let other?: problems.append("arguments must be an array of strings, not \(other.kindName)")
        }
        var environment: [String: String] = [:]
        switch document["environment"] {
        case nil: break
        case let .object(pairs)?:
            for (name, value) in pairs {
                if name.isEmpty || name.contains("=") { problems.append("environment: \"\(name)\" is not a variable name") }
                if case let .string(text) = value { environment[name] = text } else {
                    problems.append("environment.\(name) must be a string, not \(value.kindName)")
                }
            }
        case let other?: problems.append("environment must be an object of strings, not \(other.kindName)")
        }
        guard problems.isEmpty else { throw fail(problems) }
        return VMConfig(binary: binary, arguments: arguments, environment: environment)
    }

    /// `inherited` ("NAME=value" entries) with this file's variables set.
    public func environment(overriding inherited: [String]) -> [String] {
        guard !environment.isEmpty else { return inherited }
        let kept = inherited.filter { entry in
            let name = entry.prefix { $0 != "=" }
            return environment[String(name)] == nil
        }
        return kept + environment.keys.sorted().map { "\($0)=\(environment[$0]!)" }
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
