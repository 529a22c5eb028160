import Synchronization

/// The controller's live view of one host's control stream.
public struct SessionStatus: Sendable, Equatable {
  /// Host id from its hello.
  public var hostID: String
  /// Boot id from its last hello; a new one means the host restarted.
  public var bootID: String
  /// Whether a stream is open now.
  public var connected: Bool
  /// Version the host said it held at hello.
  public var helloVersion: UInt64
  /// Last version pushed on the stream.
  public var lastSent: UInt64
  /// Highest version it acknowledged.
  public var lastAcked: UInt64
  /// Reason of its last NACK; empty after an ACK.
  public var lastNack: String
  /// Last message received (Unix ms).
  public var lastSeenMs: Int64
  /// Its data-plane address.
  public var underlayAddress: String
  /// Config pushes sent, ACKs and NACKs received, over every stream of the host (metrics).
  public var pushes: UInt64 = 0
  public var acks: UInt64 = 0
  public var nacks: UInt64 = 0
}

/// Tracks every host's control stream: who is connected, what each was sent and acknowledged,
/// and the outbox the stream handler drains. `Outbound` is the stream's message type (agents
/// and the edge have their own registries).
///
/// All state sits behind one mutex: every method is short and never awaits, so the work done
/// under the lock is bounded and a slow stream never blocks another host.
public final class SessionRegistry<Outbound: Sendable>: Sendable {
  private struct Session {
    var id: UInt64
    var status: SessionStatus
    var outbox: AsyncStream<Outbound>.Continuation?
    /// Nonce → version of pushes not yet answered, so an ACK names what it acknowledges.
    var inflight: [String: UInt64] = [:]
    /// Nonce → when it was pushed, for the push-to-ACK latency.
    var sentAt: [String: ContinuousClock.Instant] = [:]
  }

  private struct State {
    var sessions: [String: Session] = [:]
    var nextSessionID: UInt64 = 1
    var shutDown = false
    /// Push-to-ACK latencies (seconds) not yet taken by `takeAckLatencies()`; bounded.
    var ackLatencies: [Double] = []
  }

  private let state = Mutex(State())

  public init() {}

  /// Registers a stream that said hello; messages for the host go to `outbox`, which the
  /// registry finishes when the session ends. A previous stream of the same host is ended: the
  /// newest connection wins, so a host that reconnected faster than its old stream timed out is
  /// not fed twice. Returns the session id, or nil after `shutdown()`.
  public func open(
    hostID: String, bootID: String, appliedVersion: UInt64, underlay: String, nowMs: Int64,
    outbox continuation: AsyncStream<Outbound>.Continuation
  ) -> UInt64? {
    let opened: UInt64? = state.withLock { state in
      guard !state.shutDown else { return nil }
      let id = state.nextSessionID
      state.nextSessionID += 1
      var status = state.sessions[hostID]?.status
        ?? SessionStatus(
          hostID: hostID, bootID: bootID, connected: true, helloVersion: appliedVersion, lastSent: 0,
          lastAcked: 0, lastNack: "", lastSeenMs: nowMs, underlayAddress: underlay)
      state.sessions[hostID]?.outbox?.finish()
      status.bootID = bootID
      status.connected = true
      status.helloVersion = appliedVersion
      status.lastAcked = max(status.lastAcked, appliedVersion)
      status.lastSeenMs = nowMs
      if !underlay.isEmpty { status.underlayAddress = underlay }
      state.sessions[hostID] = Session(id: id, status: status, outbox: continuation)
      return id
    }
    if opened == nil { continuation.finish() }
    return opened
  }

  /// Marks the stream closed, unless a newer stream of the same host replaced it.
  public func close(hostID: String, session: UInt64) {
    state.withLock { state in
      guard state.sessions[hostID]?.id == session else { return }
      state.sessions[hostID]?.outbox?.finish()
      state.sessions[hostID]?.outbox = nil
      state.sessions[hostID]?.status.connected = false
      state.sessions[hostID]?.inflight = [:]
    }
  }

  /// Queues a message for the host's stream. With `nonce` and `version` it is a config push
  /// whose answer is expected. Returns false when the host is not connected.
  @discardableResult
  public func send(hostID: String, _ message: Outbound, nonce: String? = nil, version: UInt64? = nil) -> Bool {
    state.withLock { state in
      guard let outbox = state.sessions[hostID]?.outbox else { return false }
      if let nonce, let version {
        state.sessions[hostID]?.inflight[nonce] = version
        state.sessions[hostID]?.sentAt[nonce] = .now
        state.sessions[hostID]?.status.lastSent = version
        state.sessions[hostID]?.status.pushes += 1
      }
      outbox.yield(message)
      return true
    }
  }

  /// Records an ACK. Returns the version acknowledged: the one pushed with `nonce`, or the
  /// host's own claim when the nonce is unknown (an ACK that crossed a reconnect). The acked
  /// version never goes down.
  @discardableResult
  public func acknowledge(hostID: String, nonce: String, version: UInt64, nowMs: Int64) -> UInt64 {
    state.withLock { state in
      guard var session = state.sessions[hostID] else { return version }
      let acked = session.inflight.removeValue(forKey: nonce) ?? version
      if let sent = session.sentAt.removeValue(forKey: nonce), state.ackLatencies.count < 10_000 {
        let elapsed = ContinuousClock.now - sent
        state.ackLatencies.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
      }
      session.status.acks += 1
      session.status.lastAcked = max(session.status.lastAcked, acked)
      session.status.lastNack = ""
      session.status.lastSeenMs = nowMs
      state.sessions[hostID] = session
      return acked
    }
  }

  /// Records a NACK: the host keeps its previous config, and says why.
  public func reject(hostID: String, nonce: String, error: String, nowMs: Int64) {
    state.withLock { state in
      state.sessions[hostID]?.inflight.removeValue(forKey: nonce)
      state.sessions[hostID]?.sentAt.removeValue(forKey: nonce)
      state.sessions[hostID]?.status.nacks += 1
      state.sessions[hostID]?.status.lastNack = error
      state.sessions[hostID]?.status.lastSeenMs = nowMs
    }
  }

  /// Push-to-ACK latencies (seconds) measured since the last call.
  public func takeAckLatencies() -> [Double] {
    state.withLock { state in
      defer { state.ackLatencies.removeAll(keepingCapacity: true) }
      return state.ackLatencies
    }
  }

  /// Records that the host is alive.
  public func touch(hostID: String, nowMs: Int64) {
    state.withLock { state in state.sessions[hostID]?.status.lastSeenMs = nowMs }
  }

  /// The status of one host, if it ever connected since the controller started.
  public func status(_ hostID: String) -> SessionStatus? {
    state.withLock { $0.sessions[hostID]?.status }
  }

  /// Every host that connected since the controller started, by id.
  public func statuses() -> [SessionStatus] {
    state.withLock { state in state.sessions.values.map(\.status).sorted { $0.hostID < $1.hostID } }
  }

  /// Host ids with an open stream.
  public var connectedHosts: [String] {
    state.withLock { state in state.sessions.values.filter(\.status.connected).map(\.status.hostID).sorted() }
  }

  /// Ends every stream and refuses new ones: long-lived handlers return so that a graceful
  /// shutdown does not wait for hosts to hang up.
  public func shutdown() {
    state.withLock { state in
      state.shutDown = true
      for key in state.sessions.keys {
        state.sessions[key]?.outbox?.finish()
        state.sessions[key]?.outbox = nil
        state.sessions[key]?.status.connected = false
      }
    }
  }
}
