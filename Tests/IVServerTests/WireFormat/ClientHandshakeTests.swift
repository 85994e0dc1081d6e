import LinuxSystem
@testable import ServerCore
import WireFormat
import Testing
@testable import IVServer

let regionNames = ["hwcomposer": 0, "e2e_primary": 4, "sixteen_chars_xx": 9]

/// A handshake request: i16 length, then the name bytes.
func request(_ name: String, length: Int16? = nil) -> [UInt8] {
    let bytes = Array(name.utf8)
    let length = UInt16(bitPattern: length ?? Int16(bytes.count))
    return [UInt8(length & 0xFF), UInt8(length >> 8)] + bytes
}

@Suite("HALD handshake state machine")
struct ClientHandshakeTests {
    @Test("greeting is protocol version 0 as a little-endian u32")
    func greeting() {
        #expect(ClientHandshake.greeting == [0, 0, 0, 0])
        #expect(ClientHandshake.grantPayload == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("a whole request at once is granted")
    func wholeRequest() {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        #expect(handshake.decision == nil)
        #expect(handshake.receive(request("e2e_primary")) == .grant(region: 4))
        #expect(handshake.decision == .grant(region: 4))
    }

    @Test("one byte at a time gives the same answer, and waits until the last byte")
    func byteAtATime() {
        let bytes = request("hwcomposer")
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        for byte in bytes.dropLast() {
            #expect(handshake.receive([byte]) == .needMoreInput)
        }
        #expect(handshake.receive([bytes.last!]) == .grant(region: 0))
    }

    @Test("every split point of a request gives the same answer")
    func everySplit() {
        let bytes = request("e2e_primary")
        for split in 0...bytes.count {
            var handshake = ClientHandshake(regionIndexByName: regionNames)
            let first = handshake.receive(bytes[..<split])
            #expect(first == (split == bytes.count ? .grant(region: 4) : .needMoreInput))
            #expect(handshake.receive(bytes[split...]) == .grant(region: 4))
        }
    }

    @Test("bad lengths are refused as soon as the length is complete", arguments: [Int16(0), 17, -1, Int16.min, Int16.max])
    func badLength(length: Int16) {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        let bytes = request("x", length: length)
        #expect(handshake.receive(bytes[..<1]) == .needMoreInput)
        #expect(handshake.receive(bytes[1..<2]) == .refuse(.badNameLength(length)))
    }

    @Test("0xffff on the wire is length -1")
    func lengthFFFF() {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        #expect(handshake.receive([0xFF, 0xFF]) == .refuse(.badNameLength(-1)))
    }

    @Test("a 16-byte name is a legal request")
    func sixteenBytes() {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        #expect(handshake.receive(request("sixteen_chars_xx")) == .grant(region: 9))
    }

    @Test("unknown names are refused, and shown escaped")
    func unknownName() {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        #expect(handshake.receive(request("nope")) == .refuse(.unknownRegion("'nope'")))
        var binary = ClientHandshake(regionIndexByName: regionNames)
        #expect(binary.receive([3, 0, 0xFF, 0x00, 0x27]) == .refuse(.unknownRegion("'\\xff\\x00\\x27'")))
        // a name with a trailing NUL is not the region's name
        var nul = ClientHandshake(regionIndexByName: regionNames)
        #expect(nul.receive(request("hwcomposer\0")) == .refuse(.unknownRegion("'hwcomposer\\x00'")))
    }

    @Test("names match byte for byte: no prefix, no extension, no Unicode equivalence")
    func byteExactNames() {
        let names = ClientHandshake.RegionNames(indexByName: ["caf\u{E9}": 1, "e2e": 2, "e2e_primary": 3])
        #expect(names.index(of: Array("caf\u{E9}".utf8)[...]) == 1)
        // "e" + combining acute: equal as Swift Strings, different bytes
        #expect("cafe\u{301}" == "caf\u{E9}")
        #expect(names.index(of: Array("cafe\u{301}".utf8)[...]) == nil)
        #expect(names.index(of: Array("e2e".utf8)[...]) == 2)
        #expect(names.index(of: Array("e2e_".utf8)[...]) == nil)
        #expect(names.index(of: Array("e2e_primary".utf8)[...]) == 3)
        #expect(names.index(of: Array("E2E".utf8)[...]) == nil)
        #expect(names.index(of: [UInt8]()[...]) == nil)
        var handshake = ClientHandshake(regions: names)
        #expect(handshake.receive([6, 0] + Array("cafe\u{301}".utf8)[...]) == .refuse(.unknownRegion("'cafe\\xcc\\x81'")))
    }

    @Test("closing early at any point is a refusal that counts the bytes")
    func closedEarly() {
        let bytes = request("hwcomposer")
        for split in 0..<bytes.count {
            var handshake = ClientHandshake(regionIndexByName: regionNames)
            _ = handshake.receive(bytes[..<split])
            #expect(handshake.receiveEndOfStream() == .refuse(.closedEarly(receivedBytes: split)))
        }
    }

    @Test("a decision is final: extra bytes and a later close change nothing")
    func decisionIsFinal() {
        var handshake = ClientHandshake(regionIndexByName: regionNames)
        #expect(handshake.receive(request("hwcomposer") + [1, 2, 3]) == .grant(region: 0))
        #expect(handshake.receive([9, 9]) == .grant(region: 0))
        #expect(handshake.receiveEndOfStream() == .grant(region: 0))
    }

    @Test("refusal texts")
    func refusalText() {
        #expect(ClientHandshake.Refusal.badNameLength(17).description == "bad region name length 17 (must be 1...16)")
        #expect(ClientHandshake.Refusal.unknownRegion("'x'").description == "unknown region 'x'")
        #expect(ClientHandshake.Refusal.closedEarly(receivedBytes: 2).description == "client closed the connection after 2 of the handshake's bytes")
    }
}
