import Synchronization
import GRPCCore
import HostnatProto
import HostnatTrace
import SwiftProtobuf

/// The life of one control stream, the same for agents and the edge: the first message must be
/// a hello, answered with the host's current snapshot; then the outbox (pushes, grants,
/// heartbeats) is written while inbound messages are handled, until either side ends or the
/// registry shuts down. ACKs and NACKs update the registry's live view first (so status is
/// current at once), then the durable record.
struct ControlStream<Kind: ControlKind>: Sendable {
  let store: ControllerStore
  let registry: SessionRegistry<Kind.Outbound>
  let heartbeatInterval: Duration
  let nowMs: MillisecondClock
  /// Where every message of the stream is recorded (`--trace-control`), if anywhere.
  var trace: ControlTrace? = nil
  /// Told once the snapshot answering a hello is queued.
  var opened: (@Sendable (Hostnat_V1_Hello) async -> Void)? = nil
  /// Told every ACK once it is durable.
  var acknowledged: (@Sendable (HostAcknowledgement) -> Void)? = nil
  /// Handles the messages only this kind of stream has (the host is marked alive first).
  var received: (@Sendable (String, Kind.Other) async throws -> Void)? = nil

  init(store: ControllerStore, registry: SessionRegistry<Kind.Outbound>, heartbeatInterval: Duration, nowMs: @escaping MillisecondClock) {
    self.store = store
    self.registry = registry
    self.heartbeatInterval = heartbeatInterval
    self.nowMs = nowMs
  }

  /// Serves one stream; `remote` (the host's transport address) names it in a trace until its
  /// hello names the host.
  func run(request: RPCAsyncSequence<Kind.Inbound, any Error>, response: RPCWriter<Kind.Outbound>, remote: String) async throws {
    let (outbox, outboxContinuation) = AsyncStream<Kind.Outbound>.makeStream(bufferingPolicy: .unbounded)
    let registry = self.registry
    let trace = self.trace
    let traceStream = trace?.nextStream() ?? 0
    let peer = TracePeer(remote)

    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        for await message in outbox {
          trace?.record(.sent, peer: peer.name.withLock { $0 }, stream: traceStream, message)
          try await response.write(message)
        }
      }
      // A host that stops talking (SIGSTOP, a hung process) can keep its TCP connection open:
      // only its silence tells. Three heartbeats of silence end the stream, so it shows as
      // disconnected and its ownership lease starts running.
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
      group.addTask { [self] in
        var session: (hostID: String, id: UInt64)?
        defer {
          if let session { registry.close(hostID: session.hostID, session: session.id) }
          outboxContinuation.finish()
        }
        for try await message in request {
          lastHeard.value.withLock { $0 = .now }
          if trace != nil, session == nil, case .hello(let hello) = Kind.inbound(message), !hello.hostID.isEmpty {
            peer.name.withLock { $0 = hello.hostID }
          }
          trace?.record(.received, peer: peer.name.withLock { $0 }, stream: traceStream, message)
          if let session {
            try await handle(hostID: session.hostID, message)
            continue
          }
          guard case .hello(let hello) = Kind.inbound(message) else {
            throw RPCError(code: .invalidArgument, message: "the first message on a control stream must be hello")
          }
          guard !hello.hostID.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "hello.hostId: must not be empty")
          }
          guard
            let id = registry.open(
              hostID: hello.hostID, bootID: hello.bootID, appliedVersion: hello.appliedVersion,
              underlay: hello.underlayAddress, nowMs: nowMs(), outbox: outboxContinuation)
          else {
            throw RPCError(code: .unavailable, message: "the controller is shutting down")
          }
          session = (hello.hostID, id)
          let config = try await currentSnapshot(hostID: hello.hostID, holds: hello.appliedVersion, underlay: hello.underlayAddress)
          Kind.push(config, to: hello.hostID, in: registry)
          await opened?(hello)
        }
      }
      group.addTask { [heartbeatInterval, nowMs] in
        while true {
          try await Task.sleep(for: heartbeatInterval)
          outboxContinuation.yield(Kind.heartbeat(sentMs: nowMs()))
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

  /// The snapshot to send on hello. A host never seen before gets an empty config under a new
  /// version; a host that holds a version newer than the stored one (the database was restored
  /// from an older backup) gets the stored content re-issued above its version, so versions
  /// still only go up.
  func currentSnapshot(hostID: String, holds applied: UInt64, underlay: String) async throws -> Kind.Config {
    let now = nowMs()
    return try await store.commit { tx in
      try tx.recordResponse(hostID: hostID, kind: Kind.hostKind, ackedVersion: nil, nack: nil, underlay: underlay.isEmpty ? nil : underlay)
      let stored = try Kind.storedConfig(tx.reader, hostID: hostID)
      if let stored, stored.version >= applied {
        return stored
      }
      var config = stored ?? Kind.emptyConfig(hostID: hostID)
      try tx.raiseVersionCounter(above: applied)
      config.version = try tx.nextVersion()
      config.generatedMs = now
      try Kind.store(config, tx)
      return config
    }
  }

  /// Every message after the hello.
  func handle(hostID: String, _ message: Kind.Inbound) async throws {
    let now = nowMs()
    switch Kind.inbound(message) {
    case .ack(let ack):
      let version = registry.acknowledge(hostID: hostID, nonce: ack.nonce, version: ack.version, nowMs: now)
      try await store.commit { try $0.recordResponse(hostID: hostID, kind: Kind.hostKind, ackedVersion: version, nack: nil, underlay: nil) }
      acknowledged?(HostAcknowledgement(hostID: hostID, version: version))
    case .nack(let nack):
      registry.reject(hostID: hostID, nonce: nack.nonce, error: nack.error, nowMs: now)
      let reason = nack.error.isEmpty ? "rejected without a reason" : nack.error
      try await store.commit { try $0.recordResponse(hostID: hostID, kind: Kind.hostKind, ackedVersion: nil, nack: reason, underlay: nil) }
    case .heartbeat:
      registry.touch(hostID: hostID, nowMs: now)
    case .other(let other):
      registry.touch(hostID: hostID, nowMs: now)
      try await received?(hostID, other)
    case .hello:
      throw RPCError(code: .invalidArgument, message: "hello may only be the first message of a stream")
    case .empty:
      throw RPCError(code: .invalidArgument, message: "empty \(Kind.peerName) message")
    }
  }
}

/// When a stream last received anything, shared by its reader and its silence check.
final class LastHeard: Sendable {
  let value = Mutex(ContinuousClock.now)
}

/// The name a stream's messages carry in a trace, shared by its reader and writer.
final class TracePeer: Sendable {
  let name: Mutex<String>
  init(_ name: String) { self.name = Mutex(name) }
}
