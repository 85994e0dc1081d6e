import LinuxSystem
@testable import ServerCore
import WireFormat
import Glibc
import Testing
@testable import IVServer

@Suite("Built-in default layout")
struct DefaultLayoutTests {
    @Test("the built-in copy is byte for byte conf/vsoc_mem.json")
    func identicalToConf() throws {
        let file = try FileContents.read(path: repositoryRoot + "/conf/vsoc_mem.json")
        #expect(file == Array((DefaultLayout.json + "\n").utf8), "run `make default-layout` after editing conf/vsoc_mem.json")
    }

    @Test("the built-in regions are what the built-in text decodes to, and plan the same")
    func regionsMatchText() throws {
        let decoded = LayoutDecoder.decode(try JSONReader.parse(DefaultLayout.json.utf8))
        #expect(decoded.problems.isEmpty)
        #expect(decoded.regions.compactMap { $0 } == DefaultLayout.regions, "run `make default-layout` after editing conf/vsoc_mem.json")
        let fromText = try LayoutLoader.load(json: DefaultLayout.json.utf8, source: DefaultLayout.sourceName)
        #expect(LayoutLoader.loadDefault() == fromText)
        #expect(LayoutEncoder.encode(LayoutLoader.loadDefault()) == LayoutEncoder.encode(fromText))
    }

    @Test("the original project's 2017 layout plans to the same header bytes",
          .enabled(if: access(repositoryRoot + "/../shared/layouts/vsoc_mem.json", R_OK) == 0))
    func sameAsOriginal() throws {
        let original = try LayoutLoader.load(path: repositoryRoot + "/../shared/layouts/vsoc_mem.json")
        #expect(LayoutEncoder.encode(original) == LayoutEncoder.encode(LayoutLoader.loadDefault()))
    }
}
