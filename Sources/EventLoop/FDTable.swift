import LinuxSystem
/// Values kept by fd number. Fds are small and dense, so a table indexed by
/// the number beats hashing. Its storage is raw memory, which is not subject
/// to Swift's run-time exclusivity checks: an array held by a class pays one
/// on every change, and a connection changes these tables twice. Loop
/// thread only, like everything that uses it.
package final class FDTable<Value> {
    private var storage: UnsafeMutablePointer<Value?>
    private var capacity: Int

    package init(capacity: Int = 64) {
        self.capacity = max(capacity, 1)
        storage = .allocate(capacity: self.capacity)
        storage.initialize(repeating: nil, count: self.capacity)
    }

    deinit {
        storage.deinitialize(count: capacity)
        storage.deallocate()
    }

    package subscript(fd: Int32) -> Value? {
        get {
            let slot = Int(fd)
            return slot >= 0 && slot < capacity ? storage[slot] : nil
        }
        set {
            let slot = Int(fd)
            precondition(slot >= 0, "negative fd in an FDTable")
            if slot >= capacity { grow(toHold: slot) }
            storage[slot] = newValue
        }
    }

    /// Every value, by fd.
    package var values: [Value] {
        (0..<capacity).compactMap { storage[$0] }
    }

    package func removeAll() {
        for slot in 0..<capacity { storage[slot] = nil }
    }

    private func grow(toHold slot: Int) {
        var newCapacity = capacity
        while newCapacity <= slot { newCapacity *= 2 }
        let larger = UnsafeMutablePointer<Value?>.allocate(capacity: newCapacity)
        larger.moveInitialize(from: storage, count: capacity)
        (larger + capacity).initialize(repeating: nil, count: newCapacity - capacity)
        storage.deallocate()
        storage = larger
        capacity = newCapacity
    }
}
