import GRPCCore
import HostnatControlRules
import HostnatProto
import HostnatTrace
import SwiftProtobuf
import Synchronization

/// The life of one control stream, the same for agents and the edge: the first message must be
/// a hello, answered with the host's current snapshot; then the outbox (pushes, grants,
/// heartbeats) is written while inbound messages are handled, until either side ends or the
/// registry shuts down.
///
/// The reader only checks and sorts what arrives (and notes that the host is alive); the hello,
/// ACKs, NACKs and the kind's own messages are handled in order by a worker task beside it. So
/// a slow store delays answers but never the reading: heartbeats keep the stream alive.
struct ControlStream<Kind: ControlKind>: Sendable {
  let store: ControllerStore
  let registry: SessionRegistry<Kind.Outbound>
  let heartbeatInterval: Duration
  let nowMs: MillisecondClock
  /// Where every message of the stream is recorded (`--trace-control`), if anywhere.
  var trace: ControlTrace? = nil
  /// Told of a hello before it is answered (the answer is read from the store after it).
  var prepare: (@Sendable (Hostnat_V1_Hello) async throws -> Void)? = nil
  /// Told once the snapshot answering a hello is queued.
  var opened: (@Sendable (Hostnat_V1_Hello) async -> Void)? = nil
  /// Told every ACK once it is durable.
  var acknowledged: (@Sendable (HostAcknowledgement) -> Void)? = nil
  /// Handles the messages only this kind of stream has (the host is marked alive first).
  var received: (@Sendable (String, Kind.Other) async throws -> Void)? = nil
  /// Messages read but not yet handled, per stream; a host that floods past it loses the stream.
  var workCapacity = 1024

  init(store: ControllerStore, registry: SessionRegistry<Kind.Outbound>, heartbeatInterval: Duration, nowMs: @escaping MillisecondClock) {
    self.store = store
    self.registry = registry
    self.heartbeatInterval = heartbeatInterval
    self.nowMs = nowMs
  }

  /// What the reader hands the worker.
  enum Work: Sendable {
    case hello(Hostnat_V1_Hello)
    case ack(Hostnat_V1_Ack)
    case nack(Hostnat_V1_Nack)
    case other(Kind.Other)
  }

  /// Serves one stream; `remote` (the host's transport address) names it in a trace until its
  /// hello names the host.
  func run(request: RPCAsyncSequence<Kind.Inbound, any Error>, response: RPCWriter<Kind.Outbound>, remote: String) async throws {
    let outbox = Outbox<Kind.Outbound>(capacity: registry.outboxCapacity)
    let (work, workQueue) = AsyncStream<Work>.makeStream(bufferingPolicy: .bufferingOldest(workCapacity))
    let registry = self.registry
    let trace = self.trace
    let traceStream = trace?.nextStream() ?? 0
    let peer = TracePeer(remote)
    let session = OpenSession()
    defer {
      if let open = session.value.withLock({ $0 }) { registry.close(hostID: open.hostID, session: open.id) }
      outbox.finish()
      workQueue.finish()
    }

    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        while let message = await outbox.next() {
          trace?.record(.sent, peer: peer.name.withLock { $0 }, stream: traceStream, message)
          try await response.write(message)
        }
      }
      // A host that stops talking (SIGSTOP, a hung process) can keep its TCP connection open:
      // only its silence tells. Three heartbeats of silence end the stream, so it shows as
      // disconnected and, in lease mode, its ownership lease starts running.
      let lastHeard = LastHeard()
      let silenceLimit = max(heartbeatInterval * 3, .seconds(3))
      group.addTask {
        while true {
          try await Task.sleep(for: heartbeatInterval)
          if ContinuousClock.now - lastHeard.value.withLock({ $0 }) > silenceLimit {
            throw RPCError(code: .unavailable, message: "no message from the host for \(silenceLimit)")
          }
        }
      }
      group.addTask {
        defer { workQueue.finish() }
        var hostID: String?
        for try await message in request {
          lastHeard.value.withLock { $0 = .now }
          if trace != nil, hostID == nil, case .hello(let hello) = Kind.inbound(message), !hello.hostID.isEmpty {
            peer.name.withLock { $0 = String(hello.hostID.prefix(256)) }
          }
          trace?.record(.received, peer: peer.name.withLock { $0 }, stream: traceStream, message)
          do {
            try Kind.validate(message)
          } catch {
            registry.refusedMessage(hostID: hostID)
            // Before a valid hello there is nobody to keep the stream for.
            if hostID == nil { throw RPCError(code: .invalidArgument, message: "\(error)") }
            continue
          }
          let item: Work
          switch Kind.inbound(message) {
          case .hello(let hello):
            guard hostID == nil else {
              throw RPCError(code: .invalidArgument, message: "hello may only be the first message of a stream")
            }
            hostID = hello.hostID
            item = .hello(hello)
          case _ where hostID == nil:
            throw RPCError(code: .invalidArgument, message: "the first message on a control stream must be hello")
          case .heartbeat:
            registry.touch(hostID: hostID!, nowMs: nowMs())
            continue
          case .ack(let ack): item = .ack(ack)
          case .nack(let nack): item = .nack(nack)
          case .other(let other):
            registry.touch(hostID: hostID!, nowMs: nowMs())
            item = .other(other)
          case .empty:
            throw RPCError(code: .invalidArgument, message: "empty \(Kind.peerName) message")
          }
          if case .dropped = workQueue.yield(item) {
            throw RPCError(code: .resourceExhausted, message: "more than \(workCapacity) messages from the host are waiting to be handled")
          }
        }
      }
      group.addTask { [self] in
        for await item in work {
          switch item {
          case .hello(let hello):
            let opening = registry.open(
              hostID: hello.hostID, bootID: hello.bootID, appliedVersion: hello.appliedVersion,
              underlay: hello.underlayAddress, features: hello.features, fenced: hello.fenced,
              heldBlocks: hello.blocks.count, nowMs: nowMs(), outbox: outbox)
            switch opening {
            case .opened(let id):
              session.value.withLock { $0 = (hello.hostID, id) }
            case .refused(let reason):
              throw RPCError(code: .alreadyExists, message: reason)
            case .shutDown:
              throw RPCError(code: .unavailable, message: "the controller is shutting down")
            }
            try await prepare?(hello)
            let config = try await currentSnapshot(hello)
            Kind.push(config, to: hello.hostID, in: registry)
            await opened?(hello)
          case .ack(let ack):
            guard let open = session.value.withLock({ $0 }) else { continue }
            try await handle(ack, hostID: open.hostID, session: open.id)
          case .nack(let nack):
            guard let open = session.value.withLock({ $0 }) else { continue }
            let now = nowMs()
            guard registry.reject(hostID: open.hostID, session: open.id, nonce: nack.nonce, error: nack.error, nowMs: now) else { continue }
            let reason = nack.error.isEmpty ? "rejected without a reason" : String(nack.error.prefix(WireBounds.maxReason))
            try await store.commit { try $0.recordResponse(hostID: open.hostID, kind: Kind.hostKind, ackedVersion: nil, nack: reason, underlay: nil) }
          case .other(let other):
            guard let open = session.value.withLock({ $0 }) else { continue }
            try await received?(open.hostID, other)
          }
        }
      }
      group.addTask { [heartbeatInterval, nowMs] in
        while true {
          try await Task.sleep(for: heartbeatInterval)
          outbox.enqueue(Kind.heartbeat(sentMs: nowMs()))
        }
      }
      // Whichever ends first ends the stream: the host hung up, the registry closed the outbox
      // (a newer stream of the same host, or shutdown), or an error.
      defer { group.cancelAll() }
      do {
        try await group.next()
      } catch is CancellationError {
        return
      }
    }
  }

  /// An ACK counts only for a nonce in flight on this stream that names its version (rule 11).
  func handle(_ ack: Hostnat_V1_Ack, hostID: String, session id: UInt64) async throws {
    guard let acked = registry.acknowledge(hostID: hostID, session: id, nonce: ack.nonce, version: ack.version, nowMs: nowMs()) else {
      return
    }
    try await store.commit {
      try $0.recordResponse(hostID: hostID, kind: Kind.hostKind, ackedVersion: acked.version, ackedEpoch: acked.epoch, nack: nil, underlay: nil)
    }
    acknowledged?(HostAcknowledgement(hostID: hostID, version: acked.version, epoch: acked.epoch))
  }

  /// The snapshot to send on hello. A host never seen before gets an empty config under a new
  /// token. A host that holds a newer token than the stored config (the store was restored from
  /// an older backup), or the same token with other content, gets the stored content re-issued
  /// under an epoch above the one it holds: tokens only go up (rule 1).
  func currentSnapshot(_ hello: Hostnat_V1_Hello) async throws -> Kind.Config {
    let now = nowMs()
    let hostID = hello.hostID
    let applied = hello.appliedToken
    return try await store.commit { tx in
      try tx.recordResponse(
        hostID: hostID, kind: Kind.hostKind, ackedVersion: nil, nack: nil, underlay: hello.underlayAddress.isEmpty ? nil : hello.underlayAddress)
      try tx.recordHello(hello, kind: Kind.hostKind)
      let stored = try Kind.storedConfig(tx.reader, hostID: hostID)
      if let stored, Self.acceptable(stored.token, by: applied) {
        return stored
      }
      var config = stored ?? Kind.emptyConfig(hostID: hostID)
      let epoch = try applied.epoch >= tx.reader.epoch() ? tx.raiseEpoch(above: applied.epoch) : tx.reader.epoch()
      try tx.raiseVersionCounter(above: applied.version)
      config.stamp(storeID: try tx.reader.storeID(), epoch: epoch, version: try tx.nextVersion(), nowMs: now)
      try Kind.store(config, tx)
      return config
    }
  }

  /// Whether a host holding `held` would take a snapshot stamped `offered` (apply it, or ACK it
  /// unchanged).
  static func acceptable(_ offered: FencingToken, by held: FencingToken) -> Bool {
    switch held.verdict(on: offered) {
    case .apply, .unchanged: true
    case .refuse: false
    }
  }
}

/// When a stream last received anything, shared by its reader and its silence check.
final class LastHeard: Sendable {
  let value = Mutex(ContinuousClock.now)
}

/// The stream's session once its hello was accepted, shared by its worker and its end.
final class OpenSession: Sendable {
  let value = Mutex<(hostID: String, id: UInt64)?>(nil)
}

/// The name a stream's messages carry in a trace, shared by its reader and writer.
final class TracePeer: Sendable {
  let name: Mutex<String>
  init(_ name: String) { self.name = Mutex(name) }
}
