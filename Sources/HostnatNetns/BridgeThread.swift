import HostnatDataplane

/// A bridge direction runs on the data plane's loop thread: a dedicated pthread (it blocks in
/// poll/recvmmsg, so it must not sit on the cooperative pool) with a bounded stop.
typealias BridgeThread = LoopThread
