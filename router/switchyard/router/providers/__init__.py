"""Provider adapters: one module per wire protocol behind one small interface."""
