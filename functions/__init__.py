"""Trigger handlers, one blueprint per trigger: decode, call one service, map the result."""
