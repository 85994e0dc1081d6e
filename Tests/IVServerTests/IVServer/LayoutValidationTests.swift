import WireFormat
import LinuxSystem
@testable import ServerCore
import Testing
@testable import IVServer

/// A region as JSON text with one field replaced or removed.
func regionJSON(
    name: String = "\"r\"", current: String = "1", minimum: String = "1", size: String = "4096",
    managedBy: String? = nil, g2h: String = "{ \"num_nodes_lg2\": 1 }", h2g: String = "{ \"num_nodes_lg2\": 1 }",
    extra: String = "", omit: String? = nil
) -> String {
    var fields: [(String, String)] = [
        ("device_name", name), ("current_version", current), ("min_compatible_version", minimum),
        ("region_size", size), ("guest_to_host_signal_table", g2h), ("host_to_guest_signal_table", h2g),
    ]
    if let managedBy { fields.append(("managed_by", managedBy)) }
    fields.removeAll { $0.0 == omit }
    return "{ " + (fields.map { "\"\($0.0)\": \($0.1)" } + (extra.isEmpty ? [] : [extra])).joined(separator: ", ") + " }"
}

func layoutJSON(_ regions: String...) -> String {
    "{ \"vsoc_device_regions\": [ \(regions.joined(separator: ", ")) ] }"
}

/// The problem lines a layout produces (empty when valid).
func problems(_ json: String) -> [String] {
    do {
        _ = try LayoutLoader.load(json: json.utf8, source: "test.json")
        return []
    } catch {
        return error.problems.map(\.description)
    }
}

@Suite("Layout validation")
struct LayoutValidationTests {
    @Test("a minimal valid layout has no problems")
    func minimalValid() {
        #expect(problems(layoutJSON(regionJSON())) == [])
    }

    @Test("comments may appear at every level")
    func comments() {
        let json = """
            { "__top": "x", "vsoc_device_regions": [ \(regionJSON(g2h: "{ \"num_nodes_lg2\": 1, \"__c\": [1, {}] }", extra: "\"__note\": null")) ] }
            """
        #expect(problems(json) == [])
    }

    @Test("bad JSON reports line and column")
    func badJSON() {
        let json = "{\n  \"vsoc_device_regions\": [\n    { \"device_name\": \"a\",, }\n  ]\n}"
        #expect(problems(json) == ["bad JSON at line 3, column 26: unexpected ',', expected a member name in double quotes"])
        #expect(problems("") == ["bad JSON at line 1, column 1: unexpected end of input, expected a value"])
        #expect(problems("{ \"vsoc_device_regions\": [] } x") == ["bad JSON at line 1, column 31: unexpected 'x' after the document"])
    }

    @Test("duplicate keys are an error, not a silent override")
    func duplicateKey() {
        let json = "{ \"vsoc_device_regions\": [],\n \"vsoc_device_regions\": [] }"
        #expect(problems(json) == ["bad JSON at line 2, column 2: duplicate key \"vsoc_device_regions\""])
    }

    @Test("document shape")
    func documentShape() {
        #expect(problems("[]") == ["the document must be an object with \"vsoc_device_regions\", not an array"])
        #expect(problems("{}") == ["\"vsoc_device_regions\" is missing"])
        #expect(problems("{ \"vsoc_device_regions\": {} }") == ["\"vsoc_device_regions\" must be an array, not an object"])
        #expect(problems("{ \"vsoc_device_regions\": [] }") == ["\"vsoc_device_regions\" is empty: a layout needs at least one region"])
        #expect(problems(layoutJSON("7")) == ["region #0: must be an object, not a number"])
    }

    @Test("unknown fields are reported, so typos do not pass silently")
    func unknownFields() {
        #expect(problems("{ \"guest\": {}, \"vsoc_device_regions\": [ \(regionJSON()) ] }")
            == ["unknown field \"guest\" (comments must start with \"__\")"])
        #expect(problems(layoutJSON(regionJSON(extra: "\"region_sise\": 4")))
            == ["region 'r': unknown field \"region_sise\" (comments must start with \"__\")"])
        #expect(problems(layoutJSON(regionJSON(g2h: "{ \"num_nodes_lg2\": 1, \"nodes\": 2 }")))
            == ["region 'r': guest_to_host_signal_table: unknown field \"nodes\" (comments must start with \"__\")"])
    }

    @Test("every mandatory field is required", arguments: [
        "device_name", "current_version", "min_compatible_version", "region_size",
        "guest_to_host_signal_table", "host_to_guest_signal_table",
    ])
    func missingField(field: String) {
        let subject = field == "device_name" ? "region #0" : "region 'r'"
        #expect(problems(layoutJSON(regionJSON(omit: field))) == ["\(subject): field \"\(field)\" is missing"])
    }

    @Test("types and ranges")
    func typesAndRanges() {
        #expect(problems(layoutJSON(regionJSON(name: "5"))) == ["region #0: device_name must be a string, not a number"])
        #expect(problems(layoutJSON(regionJSON(current: "\"1\""))) == ["region 'r': current_version must be an integer, not a string"])
        #expect(problems(layoutJSON(regionJSON(current: "65536"))) == ["region 'r': current_version 65536 is out of range 0...65535"])
        #expect(problems(layoutJSON(regionJSON(minimum: "-1"))) == ["region 'r': min_compatible_version -1 is out of range 0...65535"])
        #expect(problems(layoutJSON(regionJSON(minimum: "1.5"))) == ["region 'r': min_compatible_version must be an integer, not 1.5"])
        #expect(problems(layoutJSON(regionJSON(size: "0"))) == ["region 'r': region_size 0 is out of range 1...4294967295"])
        #expect(problems(layoutJSON(regionJSON(size: "4294967296"))) == ["region 'r': region_size 4294967296 is out of range 1...4294967295"])
        #expect(problems(layoutJSON(regionJSON(size: "1e3"))) == ["region 'r': region_size must be an integer, not 1e3"])
        #expect(problems(layoutJSON(regionJSON(managedBy: "3"))) == ["region 'r': managed_by must be a string, not a number"])
        #expect(problems(layoutJSON(regionJSON(g2h: "2"))) == ["region 'r': guest_to_host_signal_table must be an object, not a number"])
        #expect(problems(layoutJSON(regionJSON(h2g: "{}"))) == ["region 'r': field \"host_to_guest_signal_table.num_nodes_lg2\" is missing"])
        #expect(problems(layoutJSON(regionJSON(h2g: "{ \"num_nodes_lg2\": 30 }"))) == ["region 'r': host_to_guest_signal_table.num_nodes_lg2 30 is out of range 0...29"])
    }

    @Test("device_name length, NUL and uniqueness")
    func names() {
        #expect(problems(layoutJSON(regionJSON(name: "\"\""))) == ["region #0: device_name '' is 0 bytes; it must be 1 to 15 bytes"])
        #expect(problems(layoutJSON(regionJSON(name: "\"sixteen_chars_xx\"")))
            == ["region #0: device_name 'sixteen_chars_xx' is 16 bytes; it must be 1 to 15 bytes"])
        // 15 bytes counted in UTF-8, not characters: 8 × "é" is 16 bytes
        #expect(problems(layoutJSON(regionJSON(name: "\"éééééééé\""))).count == 1)
        #expect(problems(layoutJSON(regionJSON(name: "\"a\\u0000b\""))) == ["region 'a\u{0}b': device_name must not contain a NUL character"])
        #expect(problems(layoutJSON(regionJSON(name: "\"x\""), regionJSON(name: "\"y\""), regionJSON(name: "\"x\"")))
            == ["region 'x': device_name duplicates region #0 (this is region #2)"])
    }

    @Test("signal tables must fit in the region")
    func tablesOverflow() {
        // the issue's own example: lg2 10 and 0 need 4096 + 4 + 4 + 4 bytes
        let json = layoutJSON(regionJSON(name: "\"hwcomposer\"", g2h: "{ \"num_nodes_lg2\": 10 }", h2g: "{ \"num_nodes_lg2\": 0 }"))
        #expect(problems(json) == ["region 'hwcomposer': signal tables (4108 bytes) overflow region_size 4096"])
        #expect(problems(layoutJSON(regionJSON(size: "15", g2h: "{ \"num_nodes_lg2\": 0 }", h2g: "{ \"num_nodes_lg2\": 0 }")))
            == ["region 'r': signal tables (16 bytes) overflow region_size 15"])
    }

    @Test("managed_by must name another region that is not region 0")
    func managedBy() {
        #expect(problems(layoutJSON(regionJSON(name: "\"a\""), regionJSON(name: "\"b\"", managedBy: "\"nobody\"")))
            == ["region 'b': managed_by names 'nobody', which is not a region of this layout"])
        #expect(problems(layoutJSON(regionJSON(name: "\"a\""), regionJSON(name: "\"b\"", managedBy: "\"b\"")))
            == ["region 'b': managed_by names the region itself"])
        #expect(problems(layoutJSON(regionJSON(name: "\"a\""), regionJSON(name: "\"b\"", managedBy: "\"a\"")))
            == ["region 'b': managed_by names 'a', region #0; index 0 means \"unmanaged\" in the binary layout, so a managing region cannot be first"])
        #expect(problems(layoutJSON(regionJSON(name: "\"a\""), regionJSON(name: "\"b\""), regionJSON(name: "\"c\"", managedBy: "\"b\""))) == [])
    }

    @Test("the total must fit a 32-bit size")
    func totalTooLarge() {
        let json = layoutJSON(regionJSON(name: "\"a\"", size: "2147483648"), regionJSON(name: "\"b\"", size: "4096"))
        #expect(problems(json) == ["regions need 2147491840 bytes (0x80002000), more than the 2 GiB a 32-bit layout can describe"])
    }

    @Test("every problem of a file is reported in one run")
    func allAtOnce() {
        let json = layoutJSON(
            regionJSON(name: "\"a\"", omit: "region_size"),
            regionJSON(name: "\"b\"", current: "70000"),
            regionJSON(name: "\"c\"", size: "8", g2h: "{ \"num_nodes_lg2\": 0 }", h2g: "{ \"num_nodes_lg2\": 0 }"),
            regionJSON(name: "\"c\""),
            regionJSON(name: "\"d\"", managedBy: "\"d\""))
        #expect(problems(json) == [
            "region 'a': field \"region_size\" is missing",
            "region 'b': current_version 70000 is out of range 0...65535",
            "region 'c': device_name duplicates region #2 (this is region #3)",
            "region 'c': signal tables (16 bytes) overflow region_size 8",
            "region 'd': managed_by names the region itself",
        ])
    }

    @Test("an unreadable file names the path and the cause")
    func missingFile() {
        #expect(throws: LayoutError(source: "/nonexistent/layout.json", problems: [
            LayoutProblem(subject: nil, message: "cannot read /nonexistent/layout.json: No such file or directory"),
        ])) { try LayoutLoader.load(path: "/nonexistent/layout.json") }
    }

    @Test("the error text lists every problem under the source")
    func errorText() {
        let error = LayoutError(source: "x.json", problems: [
            LayoutProblem(subject: "region 'a'", message: "m1"), LayoutProblem(subject: nil, message: "m2"),
        ])
        #expect(error.description == "invalid layout x.json (2 problems):\n  region 'a': m1\n  m2")
    }
}
