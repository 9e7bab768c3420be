// The one translation unit that compiles Beast, for the testing harness only.
#include <boost/beast/src.hpp>
