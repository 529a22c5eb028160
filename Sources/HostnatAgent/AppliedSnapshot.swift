import HostnatContracts
import HostnatControlRules
import SwiftProtobuf
import Synchronization

/// What to answer the controller for a pushed snapshot.
enum SnapshotAnswer: Equatable {
  case ack
  case nack(String)
}

/// The snapshot a node runs (a host's config, the edge's routes), with control.proto's rules 1–3
/// in one place for both: versions only go up, a snapshot is applied whole or not at all, and it
/// is on disk before it is acknowledged.
final class AppliedSnapshot<Config: SwiftProtobuf.Message & Sendable>: Sendable {
  typealias Answer = SnapshotAnswer

  let file: StateFile<Config>
  let link: ControlLink
  let tokenOf: @Sendable (Config) -> FencingToken
  private let current: Mutex<Config?>

  /// Starts from the snapshot loaded from `file` (nil: none yet).
  init(file: StateFile<Config>, loaded: Config?, link: ControlLink, token: @escaping @Sendable (Config) -> FencingToken) {
    self.file = file
    self.link = link
    tokenOf = token
    current = Mutex(loaded)
    if let loaded {
      link.update {
        $0.appliedVersion = token(loaded).version
        $0.appliedEpoch = token(loaded).epoch
        $0.appliedAtMs = nowMs()
      }
    }
  }

  var value: Config? { current.withLock { $0 } }

  /// The token in force (`.none`: nothing held).
  var token: FencingToken { value.map(tokenOf) ?? .none }

  /// The version in force (0: none).
  var version: UInt64 { token.version }

  /// Offers a pushed snapshot (control.proto rule 1: tokens only go up). `install` puts it in
  /// force in the data plane or throws to refuse it; `restore` puts the previous one back when
  /// the snapshot cannot be saved; `reinstate` is called for the snapshot already held (after a
  /// reconnect), so a node that fenced itself can take it up again. Pushes come one at a time
  /// from the stream task.
  func offer(
    _ config: Config, install: (Config) throws -> Void, restore: (Config?) -> Void, reinstate: (Config) -> Void = { _ in }
  ) -> Answer {
    let previous = value
    let held = previous.map(tokenOf) ?? .none
    let offered = tokenOf(config)
    let answer: Answer
    switch previous == nil ? .apply : held.verdict(on: offered) {
    case .refuse(let reason):
      answer = .nack(reason)
    case .unchanged:
      reinstate(previous!)
      answer = .ack  // after every reconnect: nothing to change
    case .apply:
      answer = apply(config, token: offered, previous: previous, install: install, restore: restore)
    }
    link.update { status in
      switch answer {
      case .ack: status.acks += 1
      case .nack(let reason):
        status.nacks += 1
        status.lastNack = reason
      }
    }
    return answer
  }

  private func apply(
    _ config: Config, token: FencingToken, previous: Config?, install: (Config) throws -> Void, restore: (Config?) -> Void
  ) -> Answer {
    do {
      try install(config)
    } catch {
      return .nack("\(error)")
    }
    do {
      try file.store(config)
    } catch {
      // Not durable: put the previous snapshot back so what runs is what the disk says.
      restore(previous)
      return .nack("cannot save config: \(error)")
    }
    current.withLock { $0 = config }
    link.update {
      $0.appliedVersion = token.version
      $0.appliedEpoch = token.epoch
      $0.appliedAtMs = nowMs()
    }
    return .ack
  }
}
