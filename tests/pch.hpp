// Precompiled header of the test suite: the heavy, stable includes.
#pragma once
#include <gtest/gtest.h>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <portico/portico.hpp>
#include <portico/testing/client.hpp>
#include <portico/testing/origin.hpp>
