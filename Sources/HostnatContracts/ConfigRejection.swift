/// Why a process refuses a pushed snapshot or a setting. The text is the NACK reason the
/// controller records (and the lab checks), so it names the element and the problem.
public struct ConfigRejection: Error, Equatable, CustomStringConvertible, Sendable {
  public var reason: String
  public init(_ reason: String) { self.reason = reason }
  public var description: String { reason }
}
