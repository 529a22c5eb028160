import Synchronization

/// What a control stream writes, bounded: the newest config push in one slot (a push not yet
/// written is replaced by a newer one: the host only needs the latest snapshot, and versions can
/// never reach it out of order), and other messages (grants, heartbeats) in a bounded queue. A
/// host that does not read cannot make the controller hold more than one snapshot and
/// `capacity` small messages for it.
public final class Outbox<Message: Sendable>: Sendable {
  private struct State {
    var push: Message?
    var queue: [Message] = []
    var waiter: CheckedContinuation<Message?, Never>?
    var finished = false
    var dropped: UInt64 = 0
    var coalesced: UInt64 = 0
  }

  let capacity: Int
  private let state = Mutex(State())

  public init(capacity: Int = 64) {
    self.capacity = capacity
  }

  /// Queues a config push, replacing one not yet written. Returns whether the outbox was still
  /// open, and whether a push was replaced (it was never written, so no answer to it will come).
  @discardableResult
  func push(_ message: Message) -> (accepted: Bool, replaced: Bool) {
    var replaced = false
    let accepted = deliver { state in
      if state.push != nil {
        state.coalesced += 1
        replaced = true
      }
      state.push = message
    }
    return (accepted, replaced)
  }

  /// Queues another message; returns false (and counts it) when the queue is full or finished.
  @discardableResult
  func enqueue(_ message: Message) -> Bool {
    var accepted = true
    let open = deliver { state in
      guard state.queue.count < capacity else {
        state.dropped += 1
        accepted = false
        return
      }
      state.queue.append(message)
    }
    return open && accepted
  }

  private func deliver(_ add: (inout State) -> Void) -> Bool {
    let (resume, next): (CheckedContinuation<Message?, Never>?, Message?) = state.withLock { state in
      guard !state.finished else { return (nil, nil) }
      add(&state)
      guard let waiter = state.waiter else { return (nil, nil) }
      state.waiter = nil
      return (waiter, Self.take(&state))
    }
    if let resume { resume.resume(returning: next) }
    return state.withLock { !$0.finished }
  }

  /// The push first (it is what the host waits for), then the queue in order.
  private static func take(_ state: inout State) -> Message? {
    if let push = state.push {
      state.push = nil
      return push
    }
    return state.queue.isEmpty ? nil : state.queue.removeFirst()
  }

  /// The next message to write; nil once finished. One reader at a time; cancelling it ends the
  /// outbox (its stream is ending).
  func next() async -> Message? {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Message?, Never>) in
        let ready: (Message?, Bool) = state.withLock { state in
          if let message = Self.take(&state) { return (message, true) }
          if state.finished { return (nil, true) }
          state.waiter = continuation
          return (nil, false)
        }
        if ready.1 { continuation.resume(returning: ready.0) }
      }
    } onCancel: {
      finish()
    }
  }

  /// Ends the outbox: what is still queued is dropped (a finished stream writes nothing more)
  /// and the reader gets nil.
  func finish() {
    let waiter: CheckedContinuation<Message?, Never>? = state.withLock { state in
      state.finished = true
      state.push = nil
      state.queue.removeAll()
      defer { state.waiter = nil }
      return state.waiter
    }
    waiter?.resume(returning: nil)
  }

  /// Messages dropped because the queue was full, and pushes replaced before they were written.
  var counts: (dropped: UInt64, coalesced: UInt64) { state.withLock { ($0.dropped, $0.coalesced) } }
}
