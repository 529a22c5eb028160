public import HostnatProto
import Crypto
public import SwiftProtobuf

/// What orders snapshots (control.proto rule 1): the controller store that made it, the
/// controller's epoch then, the store's version counter, and a digest of the content. Hosts
/// compare (epoch, version); the digest tells two different snapshots stamped alike apart (two
/// controllers of one epoch, a store restored from a backup that reissued a version).
public struct FencingToken: Sendable, Hashable, CustomStringConvertible {
  public var storeID: String
  public var epoch: UInt64
  public var version: UInt64
  public var digest: String

  public init(storeID: String = "", epoch: UInt64, version: UInt64, digest: String = "") {
    self.storeID = storeID
    self.epoch = epoch
    self.version = version
    self.digest = digest
  }

  /// No snapshot held.
  public static let none = FencingToken(epoch: 0, version: 0)

  public var description: String {
    "epoch \(epoch) version \(version)" + (digest.isEmpty ? "" : " digest \(digest.prefix(12))")
  }

  /// (epoch, version) ordering: what a host compares.
  public func precedes(_ other: FencingToken) -> Bool {
    (epoch, version) < (other.epoch, other.version)
  }

  /// What a host holding `self` does with a pushed snapshot stamped `offered`.
  public func verdict(on offered: FencingToken) -> Verdict {
    if offered.precedes(self) {
      return .refuse("stale epoch \(offered.epoch) version \(offered.version) < epoch \(epoch) version \(version)")
    }
    if (offered.epoch, offered.version) == (epoch, version) {
      if offered.digest == digest || offered.digest.isEmpty || digest.isEmpty { return .unchanged }
      return .refuse("digest mismatch at epoch \(epoch) version \(version): held \(digest.prefix(12)), offered \(offered.digest.prefix(12))")
    }
    return .apply
  }

  /// A host's answer to an offered token.
  public enum Verdict: Sendable, Equatable {
    /// Newer: apply it.
    case apply
    /// The snapshot held: ACK without change.
    case unchanged
    /// NACK with the reason.
    case refuse(String)
  }
}

/// A snapshot pushed under a fencing token: a host's config or the edge's routes.
public protocol FencedSnapshot: SwiftProtobuf.Message {
  var version: UInt64 { get set }
  var generatedMs: Int64 { get set }
  var storeID: String { get set }
  var epoch: UInt64 { get set }
  var digest: String { get set }
}

extension FencedSnapshot {
  /// Its fencing token.
  public var token: FencingToken { FencingToken(storeID: storeID, epoch: epoch, version: version, digest: digest) }

  /// The snapshot with its stamps cleared: what the digest covers and content comparisons see.
  public var unstamped: Self {
    var c = self
    c.version = 0
    c.generatedMs = 0
    c.epoch = 0
    c.storeID = ""
    c.digest = ""
    return c
  }
}

extension Hostnat_V1_HostConfig: FencedSnapshot {}
extension Hostnat_V1_EdgeConfig: FencedSnapshot {}

/// SHA-256 of a snapshot's content, its stamps cleared, in protobuf's deterministic encoding:
/// equal content, equal digest, whoever computes it.
public enum ConfigDigest {
  /// The digest (hex, 32 characters: the first 128 bits).
  public static func of(_ config: some FencedSnapshot) -> String {
    var options = BinaryEncodingOptions()
    options.useDeterministicOrdering = true
    let bytes: [UInt8] = (try? config.unstamped.serializedBytes(options: options)) ?? []
    let digest = SHA256.hash(data: bytes)
    return digest.prefix(16).map { byte in
      let hex = String(byte, radix: 16)
      return byte < 16 ? "0" + hex : hex
    }.joined()
  }
}

extension Hostnat_V1_Hello {
  /// The token of the snapshot the host says it holds.
  public var appliedToken: FencingToken {
    FencingToken(storeID: appliedStoreID, epoch: appliedEpoch, version: appliedVersion, digest: appliedDigest)
  }
}
