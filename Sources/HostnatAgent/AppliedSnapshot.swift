import HostnatContracts
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
  let versionOf: @Sendable (Config) -> UInt64
  private let current: Mutex<Config?>

  /// Starts from the snapshot loaded from `file` (nil: none yet).
  init(file: StateFile<Config>, loaded: Config?, link: ControlLink, version: @escaping @Sendable (Config) -> UInt64) {
    self.file = file
    self.link = link
    versionOf = version
    current = Mutex(loaded)
    if let loaded {
      link.update {
        $0.appliedVersion = version(loaded)
        $0.appliedAtMs = nowMs()
      }
    }
  }

  var value: Config? { current.withLock { $0 } }

  /// The version in force (0: none).
  var version: UInt64 { value.map(versionOf) ?? 0 }

  /// Offers a pushed snapshot. `install` puts it in force in the data plane or throws to refuse
  /// it; `restore` puts the previous one back when the snapshot cannot be saved. Pushes come one
  /// at a time from the stream task.
  func offer(_ config: Config, install: (Config) throws -> Void, restore: (Config?) -> Void) -> Answer {
    let previous = value
    let held = previous.map(versionOf) ?? 0
    let version = versionOf(config)
    let answer: Answer
    if version < held {
      answer = .nack("stale version \(version) < \(held)")
    } else if version == held, previous != nil {
      answer = .ack  // after every reconnect: nothing to change
    } else {
      answer = apply(config, version: version, previous: previous, install: install, restore: restore)
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
    _ config: Config, version: UInt64, previous: Config?, install: (Config) throws -> Void, restore: (Config?) -> Void
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
      $0.appliedVersion = version
      $0.appliedAtMs = nowMs()
    }
    return .ack
  }
}
