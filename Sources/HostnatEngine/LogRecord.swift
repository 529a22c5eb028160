public import HostnatAddressing
import HostnatPackets

/// One NAT log event (Cloud NAT's log entry): a new translation or a drop.
@frozen
public struct LogRecord: Sendable, Hashable {
  public enum Status: UInt8, Sendable, Hashable { case ok = 0, dropped = 1 }

  /// Engine clock at the event, nanoseconds.
  public var timestamp: UInt64
  public var insideIP: IPv4Address
  public var remoteIP: IPv4Address
  public var natIP: IPv4Address
  public var insidePort: UInt16
  public var remotePort: UInt16
  public var natPort: UInt16
  public var protocolNumber: UInt8
  public var status: Status
  /// Set when `status == .dropped`.
  public var reason: DropReason?
  /// Index of the VM in the config in force (`NATEngine.vmID(at:)`), or nil for unattributed drops.
  public var vmIndex: UInt16?

  public init(
    timestamp: UInt64, insideIP: IPv4Address, remoteIP: IPv4Address, natIP: IPv4Address, insidePort: UInt16,
    remotePort: UInt16, natPort: UInt16, protocolNumber: UInt8, status: Status, reason: DropReason? = nil, vmIndex: UInt16? = nil
  ) {
    self.timestamp = timestamp
    self.insideIP = insideIP
    self.remoteIP = remoteIP
    self.natIP = natIP
    self.insidePort = insidePort
    self.remotePort = remotePort
    self.natPort = natPort
    self.protocolNumber = protocolNumber
    self.status = status
    self.reason = reason
    self.vmIndex = vmIndex
  }
}

/// A fixed-capacity ring of log records: the engine writes without allocating, the agent drains
/// between batches. When full, the oldest records are overwritten and counted in `overwritten`.
public final class LogRing {
  public let capacity: Int
  let storage: UnsafeMutablePointer<LogRecord>
  var written: Int = 0
  var read: Int = 0
  public private(set) var overwritten: UInt64 = 0

  public init(capacity: Int) {
    precondition(capacity > 0, "LogRing capacity must be positive")
    self.capacity = capacity
    storage = .allocate(capacity: capacity)
  }

  deinit { storage.deallocate() }

  public var count: Int { written - read }

  func append(_ record: LogRecord) {
    if written - read == capacity {
      read += 1
      overwritten &+= 1
    }
    (storage + written % capacity).initialize(to: record)
    written += 1
  }

  /// Removes and returns the pending records, oldest first.
  public func drain() -> [LogRecord] {
    var out: [LogRecord] = []
    out.reserveCapacity(count)
    while read < written {
      out.append(storage[read % capacity])
      read += 1
    }
    return out
  }
}
