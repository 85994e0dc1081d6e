import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// docs/clients.md's program, built from the page itself (issue 34): the
/// files after `<!-- file: PATH -->` markers, and the output it shows.
struct ClientsPage {
    var files: [(path: String, text: String)] = []
    var expectedOutput: [String] = []

    init() throws {
        let page = readText(repositoryRoot + "/docs/clients.md")
        guard !page.isEmpty else { throw TestFailure("cannot read docs/clients.md under \(repositoryRoot)") }
        let lines = page.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var index = 0
        func block(after start: Int) -> [String] {
            var body: [String] = []
            var line = start + 1
            while line < lines.count, lines[line] != "```" { body.append(lines[line]); line += 1 }
            return body
        }
        while index < lines.count {
            let line = lines[index]
            if line.hasPrefix("<!-- file: "), line.hasSuffix(" -->"), index + 1 < lines.count, lines[index + 1].hasPrefix("```") {
                let path = String(line.dropFirst("<!-- file: ".count).dropLast(" -->".count))
                files.append((path, block(after: index + 1).joined(separator: "\n") + "\n"))
            } else if line.hasPrefix("Its output against"), let fence = lines[index...].firstIndex(where: { $0.hasPrefix("```") }) {
                expectedOutput = block(after: fence)
            }
            index += 1
        }
    }
}

@Suite("docs/clients.md's program builds and runs from the page")
struct ClientsPageTests {
    @Test("its Package.swift and main.swift, beside a copy of this package named ivserver, build; the program runs against a server")
    func buildAndRun() throws {
        let page = try ClientsPage()
        #expect(page.files.map(\.path) == ["Package.swift", "Sources/hello-ivclient/main.swift"])
        #expect(page.expectedOutput.count == 5, "the page shows the program's output: \(page.expectedOutput)")

        let work = TemporaryDirectory()
        defer { _ = try? runTool(["/bin/rm", "-rf", work.path + "/ivserver", work.path + "/hello-ivclient"]) }
        // The clone, as the page says: a folder named ivserver (its sources are enough).
        let copy = try runTool(["/bin/sh", "-c", "mkdir \"$1/ivserver\" && cp -R \"$0/Package.swift\" \"$0/Sources\" \"$1/ivserver/\"",
                                repositoryRoot, work.path])
        #expect(copy.status == 0, "\(copy)")
        let program = work.path + "/hello-ivclient"
        for file in page.files {
            let path = program + "/" + file.path
            _ = try runTool(["/bin/mkdir", "-p", String(path[..<path.lastIndex(of: "/")!])])
            writeText(file.text, to: path)
        }
        let build = try runTool(["/usr/bin/env", "swift", "build", "--package-path", program], timeout: 600)
        #expect(build.status == 0, "swift build of the page's program:\n\(build.output)\n\(build.errors)")
        guard build.status == 0 else { return }

        let server = try ServerProcess()
        let run = try runTool([program + "/.build/debug/hello-ivclient", server.clientSocketPath], timeout: 10)
        #expect(run.status == 0, "\(run)")
        let shown = page.expectedOutput.map { $0.replacingOccurrences(of: "/tmp/ivserver-alice/client.sock", with: server.clientSocketPath) }
        #expect(run.output.split(separator: "\n").map(String.init) == shown, "the page says:\n\(shown.joined(separator: "\n"))")
        #expect(server.stop() == 0)

        // No server: one line and status 1, not a crash.
        let missing = try runTool([program + "/.build/debug/hello-ivclient", work.path + "/none.sock"], timeout: 10)
        #expect(missing.status == 1 && missing.output.contains("no such socket"), "\(missing)")
    }
}
