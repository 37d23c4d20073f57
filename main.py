from source_posthog.run import run

if __name__ == "__main__":
    run()
