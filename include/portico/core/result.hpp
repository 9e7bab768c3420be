// Result<T>: a value or a portico::Error. No exceptions on the data path.
#pragma once

#include <boost/system/result.hpp>

#include <portico/core/error.hpp>

namespace portico {

template <class T = void>
using Result = boost::system::result<T, Error>;

/// Called only by `Result::value()` on an error; data-path code tests `has_value()` instead.
[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

/// `Ok()` spelled like Pingora's, for hooks returning Result<void>.
inline Result<void> ok() noexcept { return {}; }

}  // namespace portico
