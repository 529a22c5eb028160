import Synchronization

/// Lets async work take turns, first come first served, without holding a lock across its
/// suspension points: the core's changes take turns here while their commit waits for the
/// store, so concurrent admin calls are serialized as with a lock, but no thread is blocked.
final class CommitGate: Sendable {
  private struct State {
    var busy = false
    var waiting: [CheckedContinuation<Void, Never>] = []
  }

  private let state = Mutex(State())

  /// Runs `body` once every earlier turn is over.
  func withTurn<T>(_ body: () async throws -> T) async throws -> T {
    await enter()
    defer { leave() }
    return try await body()
  }

  private func enter() async {
    await withCheckedContinuation { (turn: CheckedContinuation<Void, Never>) in
      let now = state.withLock { state in
        if state.busy {
          state.waiting.append(turn)
          return false
        }
        state.busy = true
        return true
      }
      if now { turn.resume() }
    }
  }

  private func leave() {
    let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
      if state.waiting.isEmpty {
        state.busy = false
        return nil
      }
      return state.waiting.removeFirst()
    }
    next?.resume()
  }
}
