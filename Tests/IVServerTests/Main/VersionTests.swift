import LinuxSystem
@testable import ServerCore
import WireFormat
import Glibc
import Testing
@testable import IVServer

@Suite("Version")
struct VersionTests {
    @Test("the compiled version is the VERSION file's")
    func matchesVersionFile() throws {
        let file = String(decoding: try FileContents.read(path: repositoryRoot + "/VERSION"), as: UTF8.self)
        #expect(file == IVServerVersion.string + "\n", "run `make version` after editing VERSION")
    }
}
