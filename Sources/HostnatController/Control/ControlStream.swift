import Synchronization
import GRPCCore
import HostnatProto
import HostnatTrace
import SwiftProtobuf

/// The life of one control stream, shared by the agent and edge services: the first message
/// must be a hello; then the outbox (pushes, grants, heartbeats) is written while inbound
/// messages are handled, until either side ends or the registry shuts down.
struct ControlStream<Inbound: SwiftProtobuf.Message & Sendable, Outbound: SwiftProtobuf.Message & Sendable> {
  let registry: SessionRegistry<Outbound>
  let heartbeatInterval: Duration
  let nowMs: @Sendable () -> Int64
  /// Extracts the hello from a message, nil when it is something else.
  let hello: @Sendable (Inbound) -> Hostnat_V1_Hello?
  /// Builds a heartbeat message.
  let heartbeat: @Sendable (Int64) -> Outbound
  /// Called once the session is registered: sends the current snapshot.
  let opened: @Sendable (Hostnat_V1_Hello) async throws -> Void
  /// Handles every message after the hello.
  let received: @Sendable (String, Inbound) async throws -> Void
  /// Where every message of the stream is recorded (`--trace-control`), if anywhere.
  var trace: ControlTrace? = nil
  /// The host's transport address: the stream's name in a trace until its hello names the host.
  var remote = ""

  func run(request: RPCAsyncSequence<Inbound, any Error>, response: RPCWriter<Outbound>) async throws {
    let (outbox, outboxContinuation) = AsyncStream<Outbound>.makeStream(bufferingPolicy: .unbounded)
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
          if trace != nil, session == nil, let hello = hello(message), !hello.hostID.isEmpty {
            peer.name.withLock { $0 = hello.hostID }
          }
          trace?.record(.received, peer: peer.name.withLock { $0 }, stream: traceStream, message)
          if let session {
            try await received(session.hostID, message)
            continue
          }
          guard let hello = hello(message) else {
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
          try await opened(hello)
        }
      }
      group.addTask { [heartbeatInterval, nowMs, heartbeat] in
        while true {
          try await Task.sleep(for: heartbeatInterval)
          outboxContinuation.yield(heartbeat(nowMs()))
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
