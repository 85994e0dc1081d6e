import LinuxSystem
import Glibc
import Testing

/// scripts/check-imports.py, which `make test` runs first: it passes on this
/// tree and fails, naming the target and the module, on one that imports
/// what it does not declare, declares what it does not import, or lets a
/// layer see what it must not.
@Suite("The layers' import check")
struct ImportCheckTests {
    private func check(_ folder: String) throws -> (status: Int32, output: String, errors: String) {
        try runTool(["/usr/bin/env", "python3", repositoryRoot + "/scripts/check-imports.py", folder], timeout: 120)
    }

    /// A copy of the package's manifest and sources, changed by `change` (a shell command run in it).
    private func copy(changing change: String) throws -> TemporaryDirectory {
        let directory = TemporaryDirectory()
        let made = try runTool(["/bin/sh", "-c", "cp -R \"$0/Package.swift\" \"$0/Sources\" \"$1/\" && cd \"$1\" && \(change)",
                                repositoryRoot, directory.path])
        guard made.status == 0 else { throw TestFailure("could not make the copy: \(made)") }
        return directory
    }

    private func cleanUp(_ directory: TemporaryDirectory) {
        _ = try? runTool(["/bin/rm", "-rf", directory.path + "/Sources", directory.path + "/Package.swift", directory.path + "/.build"])
    }

    @Test("this tree: every target imports exactly what it declares")
    func thisTree() throws {
        let result = try check(repositoryRoot)
        #expect(result.status == 0, "\(result.output)\(result.errors)")
    }

    @Test("failures, each named", arguments: [
        ("printf 'import ServerCore\\n' >> Sources/IVClient/RegionMemory.swift", "IVClient: imports ServerCore"),
        ("printf 'import CLibUV\\n' >> Sources/IVServer/Server/VSoCServer.swift", "IVServer: imports CLibUV"),
        ("sed -i 's/dependencies: \\[\"LinuxSystem\", \"WireFormat\"\\]/dependencies: [\"LinuxSystem\", \"WireFormat\", \"CLinux\"]/' Package.swift",
         "IVClient: declares CLinux in Package.swift but never imports it"),
        ("printf '@_exported import WireFormat\\n' >> Sources/IVClient/PublicTypes.swift", "@_exported import WireFormat"),
    ])
    func failures(change: String, expected: String) throws {
        let copy = try copy(changing: change)
        defer { cleanUp(copy) }
        let result = try check(copy.path)
        #expect(result.status == 1, "\(change): \(result.output)")
        #expect(result.output.contains(expected), "\(change): \(result.output)")
    }
}
