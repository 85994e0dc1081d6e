/// Where a server is in its life; the only arrows are these, each one
/// asserted:
///
///     created ──start──> started ──serve──> serving ──stop──> stopped ──close──> closed
///        └──────(start failed)──────┴──────────────(close, never served)────────┘
public struct Lifecycle: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        case created, started, serving, stopped, closed
    }

    public private(set) var state = State.created
    private let owner: String

    public init(of owner: String) {
        self.owner = owner
    }

    /// Moves on; anything but the arrows above is a bug.
    public mutating func move(to next: State) {
        switch (state, next) {
        case (.created, .started), (.started, .serving), (.serving, .stopped), (.stopped, .closed),
             (.created, .closed), (.started, .closed):
            break
        default:
            preconditionFailure("\(owner): \(state) -> \(next)")
        }
        state = next
    }
}
