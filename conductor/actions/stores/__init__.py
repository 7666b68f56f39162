"""App stores: Google Play (play) and App Store Connect (appstore), behind one StoreClient interface."""
