import WireFormat

/// Reads what QEMU's command line says about the ivshmem-doorbell device
/// attached to our socket. Pure: the caller supplies the arguments (from
/// /proc/PID/cmdline of the connected peer).
///
/// The protocol itself never tells the server how many vectors the device
/// has, and QEMU 7.2 handles a mismatch badly: it rejects each fd beyond
/// `vectors=` ("Too many eventfd received"), and since its socket chardev
/// clears O_NONBLOCK on every fd it receives and only the kept ones get it
/// back, the rejected regions' eventfds turn blocking for every host client.
public enum QemuCommandLine {
    /// QEMU's default for the `vectors` property of ivshmem-doorbell.
    public static let defaultVectors = 1

    /// The `vectors=` of the ivshmem-doorbell device whose chardev is a
    /// socket at `socketPath`, or of the only such device when no chardev
    /// path matches. Options may be QEMU's "key=value,..." or its JSON form
    /// (`-device '{"driver":"ivshmem-doorbell","vectors":2,...}'`, what
    /// libvirt writes). Nil when the arguments do not say (-readconfig,
    /// several devices, no device).
    public static func doorbellVectors(arguments: [String], socketPath: String) -> Int? {
        var chardevPaths: [String: String] = [:]  // id -> path
        var devices: [[String: String]] = []
        var index = 0
        while index + 1 < arguments.count {
            let option = arguments[index]
            let value = arguments[index + 1]
            switch option {
            case "-chardev", "--chardev":
                let fields = value.hasPrefix("{") ? parseJSONChardev(value) : parseOptions(value, implicitKey: "backend")
                if fields["backend"] == "socket", let id = fields["id"], let path = fields["path"] {
                    chardevPaths[id] = path
                }
                index += 2
            case "-device", "--device":
                let fields = value.hasPrefix("{") ? parseJSONOptions(value) : parseOptions(value, implicitKey: "driver")
                if fields["driver"] == "ivshmem-doorbell" { devices.append(fields) }
                index += 2
            default:
                index += 1
            }
        }
        let attached = devices.filter { device in
            device["chardev"].flatMap { chardevPaths[$0] } == socketPath
        }
        let candidates = attached.isEmpty ? devices : attached
        guard candidates.count == 1, let device = candidates.first else { return nil }
        guard let vectors = device["vectors"] else { return defaultVectors }
        return Int(vectors)
    }

    /// A JSON object's members whose values are strings, numbers or
    /// booleans, as the text "key=value" would give them (a number as
    /// written, a boolean as "true"/"false"); nothing when it is no object.
    static func parseJSONOptions(_ text: String) -> [String: String] {
        guard case let .object(members)? = try? JSONReader.parse(Array(text.utf8)) else { return [:] }
        var fields: [String: String] = [:]
        for (key, value) in members {
            switch value {
            case let .string(text), let .number(text): fields[key] = text
            case let .bool(flag): fields[key] = flag ? "true" : "false"
            default: break
            }
        }
        return fields
    }

    /// A chardev in QEMU's JSON form: its backend ("type"), id and, for a
    /// UNIX socket, the path ("addr": {"type": "unix", "path": …}).
    static func parseJSONChardev(_ text: String) -> [String: String] {
        guard let document = try? JSONReader.parse(Array(text.utf8)) else { return [:] }
        var fields = parseJSONOptions(text)
        if let backend = fields["backend"] ?? fields["type"] { fields["backend"] = backend }
        if case let .string(path)? = document["addr"]?["path"] ?? document["addr"]?["data"]?["path"] { fields["path"] = path }
        return fields
    }

    /// QEMU's "key=value,key=value" option syntax, where ",," is a literal
    /// comma and a first element without "=" is the implicit key's value.
    /// JSON syntax ("{...}") yields nothing here.
    package static func parseOptions(_ text: String, implicitKey: String) -> [String: String] {
        guard !text.hasPrefix("{") else { return [:] }
        var elements: [String] = []
        var current = ""
        var characters = text[...]
        while let character = characters.popFirst() {
            if character == "," {
                if characters.first == "," {
                    current.append(",")
                    characters.removeFirst()
                } else {
                    elements.append(current)
                    current = ""
                }
            } else {
                current.append(character)
            }
        }
        elements.append(current)
        var fields: [String: String] = [:]
        for (position, element) in elements.enumerated() {
            if let equals = element.firstIndex(of: "=") {
                fields[String(element[..<equals])] = String(element[element.index(after: equals)...])
            } else if position == 0 {
                fields[implicitKey] = element
            }
        }
        return fields
    }
}
