// engine: see engine.h
