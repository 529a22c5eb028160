import HostnatControlRules
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
  /// Epoch of the highest version it acknowledged.
  public var ackedEpoch: UInt64 = 0
  /// Features its hello listed (rule 10); empty: a host from before negotiation.
  public var features: [String] = []
  /// Why its newest config is not pushed (features it lacks), empty when it is.
  public var heldBack: String = ""
  /// ACKs/NACKs ignored: no such nonce in flight on its current stream (rule 11).
  public var ignoredAcks: UInt64 = 0
  /// Hellos refused: another boot of the same host id was connected (rule 12).
  public var refusedHellos: UInt64 = 0
  /// Messages refused for out-of-range values (rule 14).
  public var refusedMessages: UInt64 = 0
  /// Its hello said its lease had run out (lease mode).
  public var fenced = false
  /// Blocks its hello listed.
  public var heldBlocks = 0
  /// The last alarm about it (duplicate host id), empty when none.
  public var alarm = ""
}

/// How `SessionRegistry.open` answered a hello.
public enum SessionOpening: Sendable, Equatable {
  case opened(UInt64)
  /// Another boot of the same host id holds the stream (rule 12): the reason to send back.
  case refused(String)
  case shutDown
}

/// Tracks every host's control stream: who is connected, what each was sent and acknowledged,
/// and its bounded outbox. `Outbound` is the stream's message type (agents and the edge have
/// their own registries).
///
/// All state sits behind one mutex: every method is short and never awaits, so the work done
/// under the lock is bounded and a slow stream never blocks another host.
public final class SessionRegistry<Outbound: Sendable>: Sendable {
  struct Push: Sendable {
    var message: Outbound
    var nonce: String
    var version: UInt64
    var epoch: UInt64
  }

  private struct Session {
    var id: UInt64
    var status: SessionStatus
    var outbox: Outbox<Outbound>?
    /// Nonce → version and epoch of pushes not yet answered on this stream (rule 11).
    var inflight: [String: (version: UInt64, epoch: UInt64)] = [:]
    /// Nonce → when it was pushed, for the push-to-ACK latency.
    var sentAt: [String: ContinuousClock.Instant] = [:]
    /// The newest push on this stream: resent as is while unanswered (no store read, so a resend
    /// can never overtake a newer version).
    var lastPush: Push?
  }

  private struct State {
    var sessions: [String: Session] = [:]
    var nextSessionID: UInt64 = 1
    var shutDown = false
    /// Push-to-ACK latencies (seconds) not yet taken by `takeAckLatencies()`; bounded.
    var ackLatencies: [Double] = []
    /// Per host: ignored ACKs, refused hellos and messages (kept across sessions).
    var ignoredAcksTotal: UInt64 = 0
    var refusedHellosTotal: UInt64 = 0
    var refusedMessagesTotal: UInt64 = 0
  }

  private let state = Mutex(State())
  let outboxCapacity: Int

  public init(outboxCapacity: Int = 64) {
    self.outboxCapacity = outboxCapacity
  }

  /// Registers a stream that said hello; messages for the host go to `outbox`, which the
  /// registry finishes when the session ends. A previous stream of the same boot is ended (the
  /// host reconnected faster than its old stream timed out); a stream of another boot that is
  /// still connected makes this one refused (rule 12): two processes with one host id must not
  /// take turns holding its blocks.
  public func open(
    hostID: String, bootID: String, appliedVersion: UInt64, underlay: String, features: [String] = [],
    fenced: Bool = false, heldBlocks: Int = 0, nowMs: Int64, outbox: Outbox<Outbound>
  ) -> SessionOpening {
    let opened: SessionOpening = state.withLock { state in
      guard !state.shutDown else { return .shutDown }
      if let existing = state.sessions[hostID], existing.status.connected, existing.status.bootID != bootID {
        let reason =
          "host id \(hostID) is already connected with boot id \(existing.status.bootID) (since a message \(max(0, nowMs - existing.status.lastSeenMs)) ms ago); a second process with the same host id is refused"
        state.sessions[hostID]?.status.refusedHellos += 1
        state.sessions[hostID]?.status.alarm = "duplicate host id: boot \(bootID) refused while boot \(existing.status.bootID) is connected"
        state.refusedHellosTotal += 1
        return .refused(reason)
      }
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
      status.lastSeenMs = nowMs
      status.features = features
      status.fenced = fenced
      status.heldBlocks = heldBlocks
      status.heldBack = ""
      if !underlay.isEmpty { status.underlayAddress = underlay }
      state.sessions[hostID] = Session(id: id, status: status, outbox: outbox)
      return .opened(id)
    }
    // A refused stream is ended by its caller with the reason (finishing its outbox here would
    // end it quietly first).
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
      state.sessions[hostID]?.sentAt = [:]
      state.sessions[hostID]?.lastPush = nil
    }
  }

  /// Queues a message that expects no answer (a grant, a heartbeat). Returns false when the host
  /// is not connected or its queue is full.
  @discardableResult
  public func send(hostID: String, _ message: Outbound) -> Bool {
    state.withLock { state in
      guard let outbox = state.sessions[hostID]?.outbox else { return false }
      return outbox.enqueue(message)
    }
  }

  /// Queues a config push (replacing one not yet written). `required`: the features the config
  /// needs; a host whose hello did not list them all is not sent it (rule 10) and its status
  /// says why. Returns whether it was queued.
  @discardableResult
  public func push(
    hostID: String, _ message: Outbound, nonce: String, version: UInt64, epoch: UInt64, required: [String] = []
  ) -> Bool {
    state.withLock { state in
      guard var session = state.sessions[hostID], let outbox = session.outbox else { return false }
      let has = session.status.features.isEmpty ? ProtocolFeature.base : session.status.features
      let missing = ProtocolFeature.missing(required, from: has)
      guard missing.isEmpty else {
        session.status.heldBack =
          "version \(version) needs \(missing.joined(separator: ", ")), which this host does not list among its features (\(has.joined(separator: ", ")))"
        state.sessions[hostID] = session
        return false
      }
      let (accepted, replacedUnwritten) = outbox.push(message)
      if replacedUnwritten, let replaced = session.lastPush {
        // Never written: no answer to it can come.
        session.inflight.removeValue(forKey: replaced.nonce)
        session.sentAt.removeValue(forKey: replaced.nonce)
      }
      if session.inflight.count >= 64, let oldest = session.inflight.min(by: { $0.value.version < $1.value.version }) {
        session.inflight.removeValue(forKey: oldest.key)
        session.sentAt.removeValue(forKey: oldest.key)
      }
      session.inflight[nonce] = (version, epoch)
      session.sentAt[nonce] = .now
      session.lastPush = Push(message: message, nonce: nonce, version: version, epoch: epoch)
      session.status.lastSent = version
      session.status.pushes += 1
      session.status.heldBack = ""
      state.sessions[hostID] = session
      return accepted
    }
  }

  /// Pushes again the newest push of every connected host that has not ACKed it (lost, or
  /// NACKed: a corrupted copy is refused, the resend may arrive whole); returns the hosts it was
  /// resent to. The resend keeps its nonce, in flight again, so its ACK counts.
  @discardableResult
  public func resendUnanswered() -> [String] {
    state.withLock { state in
      var resent: [String] = []
      for (hostID, var session) in state.sessions {
        guard let outbox = session.outbox, let last = session.lastPush,
          (last.epoch, last.version) > (session.status.ackedEpoch, session.status.lastAcked)
        else { continue }
        session.inflight[last.nonce] = (last.version, last.epoch)
        state.sessions[hostID] = session
        outbox.push(last.message)
        resent.append(hostID)
      }
      return resent.sorted()
    }
  }

  /// Records an ACK on stream `session`. Returns the version and epoch acknowledged: those
  /// pushed with `nonce` on that stream, when the ACK names that version; nil (ignored and
  /// counted) for anything else, a stale ACK from an earlier stream or a forged one (rule 11).
  @discardableResult
  public func acknowledge(hostID: String, session id: UInt64, nonce: String, version: UInt64, nowMs: Int64) -> (version: UInt64, epoch: UInt64)? {
    state.withLock { state in
      guard var session = state.sessions[hostID] else { return nil }
      session.status.lastSeenMs = nowMs
      guard session.id == id, let pushed = session.inflight[nonce], pushed.version == version else {
        session.status.ignoredAcks += 1
        state.ignoredAcksTotal += 1
        state.sessions[hostID] = session
        return nil
      }
      session.inflight.removeValue(forKey: nonce)
      if let sent = session.sentAt.removeValue(forKey: nonce), state.ackLatencies.count < 10_000 {
        let elapsed = ContinuousClock.now - sent
        state.ackLatencies.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
      }
      session.status.acks += 1
      if (pushed.epoch, pushed.version) > (session.status.ackedEpoch, session.status.lastAcked) {
        session.status.lastAcked = pushed.version
        session.status.ackedEpoch = pushed.epoch
      }
      session.status.lastNack = ""
      state.sessions[hostID] = session
      return pushed
    }
  }

  /// Records a NACK on stream `session`: the host keeps its previous config, and says why.
  /// Returns false (ignored and counted) when the nonce is not in flight there.
  @discardableResult
  public func reject(hostID: String, session id: UInt64, nonce: String, error: String, nowMs: Int64) -> Bool {
    state.withLock { state in
      guard var session = state.sessions[hostID] else { return false }
      session.status.lastSeenMs = nowMs
      guard session.id == id, session.inflight.removeValue(forKey: nonce) != nil else {
        session.status.ignoredAcks += 1
        state.ignoredAcksTotal += 1
        state.sessions[hostID] = session
        return false
      }
      session.sentAt.removeValue(forKey: nonce)
      session.status.nacks += 1
      session.status.lastNack = error
      state.sessions[hostID] = session
      return true
    }
  }

  /// Counts a message refused for out-of-range values (rule 14).
  public func refusedMessage(hostID: String?) {
    state.withLock { state in
      state.refusedMessagesTotal += 1
      if let hostID { state.sessions[hostID]?.status.refusedMessages += 1 }
    }
  }

  /// Totals over every host: ignored ACKs, refused hellos, refused messages (metrics).
  public var refusals: (ignoredAcks: UInt64, refusedHellos: UInt64, refusedMessages: UInt64) {
    state.withLock { ($0.ignoredAcksTotal, $0.refusedHellosTotal, $0.refusedMessagesTotal) }
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
