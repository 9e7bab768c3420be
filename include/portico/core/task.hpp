// task<T>: the coroutine type of every asynchronous hook and engine operation.
#pragma once

#include <boost/asio/awaitable.hpp>

namespace portico {

template <class T = void>
using task = boost::asio::awaitable<T>;

}  // namespace portico
