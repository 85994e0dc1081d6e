import WireFormat
import LinuxSystem
@testable import ServerCore
import EventLoop
import Testing
@testable import IVServer

@Suite("Table keyed by fd number")
struct FDTableTests {
    final class Box {
        let value: Int
        init(_ value: Int) { self.value = value }
    }

    @Test("stores, replaces and removes by fd; absent and negative fds read as nil")
    func basics() {
        let table = FDTable<Box>(capacity: 4)
        #expect(table[0] == nil)
        #expect(table[-1] == nil)
        #expect(table[1_000_000] == nil)
        table[3] = Box(3)
        #expect(table[3]?.value == 3)
        table[3] = Box(30)
        #expect(table[3]?.value == 30)
        table[3] = nil
        #expect(table[3] == nil)
        #expect(table.values.isEmpty)
    }

    @Test("grows past its capacity and keeps what it held")
    func growth() {
        let table = FDTable<Box>(capacity: 2)
        for fd in [0, 1, 5, 2, 700, 64] { table[Int32(fd)] = Box(fd) }
        #expect(table.values.map(\.value) == [0, 1, 2, 5, 64, 700])
        #expect(table[699] == nil)
        #expect(table[701] == nil)
    }

    @Test("lets its values go when they are removed, replaced or the table ends")
    func releases() {
        weak var removed: Box?
        weak var replaced: Box?
        weak var kept: Box?
        do {
            let table = FDTable<Box>(capacity: 1)
            do {
                let a = Box(1), b = Box(2), c = Box(3)
                removed = a; replaced = b; kept = c
                table[0] = a
                table[1] = b
                table[9] = c  // after a growth
            }
            table[0] = nil
            #expect(removed == nil)
            table[1] = Box(4)
            #expect(replaced == nil)
            #expect(kept != nil)
            table.removeAll()
            #expect(kept == nil)
            table[2] = Box(5)
        }
        #expect(kept == nil)
    }
}
